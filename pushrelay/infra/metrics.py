"""Prometheus metrics of every stage, in one registry.

Labels never carry secrets or receiver paths: receiver *names* only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# ingress
received = Counter("pushrelay_ingress_received_total", "Webhook requests received",
                   registry=REGISTRY)
rejected = Counter("pushrelay_ingress_rejected_total", "Webhook requests rejected",
                   ["reason"], registry=REGISTRY)
published = Counter("pushrelay_ingress_published_total", "Push events acknowledged by Kafka",
                    registry=REGISTRY)
publish_latency = Histogram("pushrelay_ingress_publish_seconds", "Time to a Kafka ack",
                            buckets=_LATENCY_BUCKETS, registry=REGISTRY)
receivers_served = Gauge("pushrelay_ingress_receivers", "Receivers by state", ["state"],
                         registry=REGISTRY)

# the ingress's spool (docs/ingress.md, "The spool")
spool_depth = Gauge("pushrelay_spool_depth", "Events in the ingress spool not yet in Kafka",
                    registry=REGISTRY)
spool_bytes = Gauge("pushrelay_spool_bytes", "Bytes of events stored in the ingress spool",
                    registry=REGISTRY)
spool_oldest_age = Gauge("pushrelay_spool_oldest_age_seconds",
                         "Age of the oldest spooled event not yet in Kafka (0: none)",
                         registry=REGISTRY)
spool_appended = Counter("pushrelay_spool_appended_total",
                         "Events made durable in the ingress spool (answered 202)",
                         registry=REGISTRY)
spool_drained = Counter("pushrelay_spool_drained_total",
                        "Spooled events forwarded to Kafka (or dead-lettered)", registry=REGISTRY)
spool_refused = Counter("pushrelay_spool_refused_total",
                        "Events the spool refused (answered 503)", ["reason"],
                        registry=REGISTRY)

# router
events_consumed = Counter("pushrelay_router_events_total", "Push events consumed",
                          registry=REGISTRY)
events_matched = Counter("pushrelay_router_matched_total", "Warehouses matched by push events",
                         registry=REGISTRY)
requests_produced = Counter("pushrelay_router_requests_total", "Refresh requests produced",
                            registry=REGISTRY)
index_size = Gauge("pushrelay_router_index_warehouses", "Warehouses in the index",
                   registry=REGISTRY)

# refresher
requests_consumed = Counter("pushrelay_refresher_requests_total", "Refresh requests consumed",
                            registry=REGISTRY)
coalesced = Counter("pushrelay_refresher_coalesced_total",
                    "Refresh requests satisfied by another request's patch", registry=REGISTRY)
patched = Counter("pushrelay_refresher_patched_total", "Warehouse refresh patches applied",
                  registry=REGISTRY)
retried = Counter("pushrelay_refresher_retried_total", "Patch attempts retried", ["reason"],
                  registry=REGISTRY)
dropped = Counter("pushrelay_refresher_dropped_total", "Requests dropped (Warehouse gone)",
                  registry=REGISTRY)
patch_latency = Histogram("pushrelay_refresher_patch_seconds", "Duration of one patch call",
                          buckets=_LATENCY_BUCKETS, registry=REGISTRY)
end_to_end = Histogram("pushrelay_end_to_end_seconds",
                       "Push received to Warehouse patched", buckets=_LATENCY_BUCKETS,
                       registry=REGISTRY)

# every stage
dead_lettered = Counter("pushrelay_dead_lettered_total", "Messages sent to dead-letters",
                        ["stage"], registry=REGISTRY)
kube_events_written = Counter("pushrelay_kube_events_written_total",
                              "Kubernetes Event writes (create or patch)", registry=REGISTRY)
kube_events_dropped = Counter(
    "pushrelay_kube_events_dropped_total",
    "Event occurrences never written: more Events pending than PUSHRELAY_EVENT_QPS can "
    "write in 10 minutes", registry=REGISTRY)

# the embedded bus (docs/bus.md, "The embedded bus"); updated by each retention pass
bus_log_records = Gauge("pushrelay_bus_log_records", "Records stored in the embedded log",
                        ["topic"], registry=REGISTRY)
bus_log_bytes = Gauge("pushrelay_bus_log_bytes",
                      "Keys + values stored in the embedded log (bounded by "
                      "PUSHRELAY_DATA_MAX_BYTES)", registry=REGISTRY)
bus_backlog = Gauge("pushrelay_bus_backlog",
                    "Records of the embedded log its slowest consuming group has not committed "
                    "(0 on push-events and refresh-requests: drained)", ["topic"],
                    registry=REGISTRY)
bus_pruned = Counter("pushrelay_bus_pruned_total", "Records deleted by the embedded log's "
                     "retention", ["topic"], registry=REGISTRY)
