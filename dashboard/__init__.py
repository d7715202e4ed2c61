"""Front ends: the Streamlit app and the ``labelgov`` command line. No SQL and no statistics here."""
