"""cosybuild: lock, fetch and pack a cosy-offline bundle on a connected workstation."""
