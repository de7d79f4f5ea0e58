"""The service layer: one message through the core and the store (`bounces`), and what operators ask of
the state (`admin`, `report`, `charts`). Above the store, below the daemons and the operator commands."""
