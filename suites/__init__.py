"""The vmtest validation suite: ``pytest --source=URI --target=URI`` runs these checks."""
