"""Runnable examples of agents written against Tiergate with the official `openai` client."""
