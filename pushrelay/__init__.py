"""pushrelay: Quay.io push webhooks to Kargo Warehouse refreshes, over Kafka."""

__version__ = "0.1.0"
