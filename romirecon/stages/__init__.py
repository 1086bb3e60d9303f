"""Pipeline stages: each module owns its tables and its SQL."""
