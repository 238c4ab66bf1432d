"""The store seam: SQLAlchemy 2 tables, migrations and one repository per aggregate.

Nothing outside this package (and the SQL queue backend, which is built on its tables)
imports SQLAlchemy.
"""
