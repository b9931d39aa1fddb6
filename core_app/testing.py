"""Pytest fixtures for core_app and its plugins (filled in by the plugin author kit)."""
