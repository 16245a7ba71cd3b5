"""A study: its spec, its folder (the record every other view is made from) and its steps."""
