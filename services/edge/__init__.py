"""services/edge."""
