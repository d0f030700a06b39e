"""The model of services and instances, the in-memory registry, and its durable stores."""
