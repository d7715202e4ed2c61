"""The warehouse and every analytic query: the only package that speaks SQL."""
