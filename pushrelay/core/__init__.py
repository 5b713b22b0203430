"""The pure domain: no I/O, no Kafka, HTTP or Kubernetes clients.

See docs/architecture.md.
"""
