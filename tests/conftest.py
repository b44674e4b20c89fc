"""Shared pytest configuration: database and simulator fixtures live in their own modules."""

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_sim"]
