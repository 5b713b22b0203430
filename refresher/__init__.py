"""The refresher: coalesced, rate-limited, at-least-once Warehouse refresh patches."""
