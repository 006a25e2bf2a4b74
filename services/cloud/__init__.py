"""services/cloud."""
