"""The HTTP face of Tiergate: app factory, OpenAI wire types, routes, settings, CLI."""
