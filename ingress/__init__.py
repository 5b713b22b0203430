"""The ingress service: Kargo-compatible Quay.io receivers that publish push events to Kafka."""
