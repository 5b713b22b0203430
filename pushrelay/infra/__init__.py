"""Adapters: Kafka, Kubernetes, settings, logs, metrics, the service runtime.

See docs/architecture.md.
"""
