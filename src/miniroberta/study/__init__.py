"""The whole study as data: recipes, reproduce, quickstart."""
