"""The testbed: a miniature of the paper (arithmetic problems, teachers, small models)."""
