"""Client API keys: who may call the gateway, with which scope, limits and frontier budget."""
