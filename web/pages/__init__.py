"""The console's pages, one module per group of people: sign-in (everyone), the report form (a
producer's officers), the analyst's pages and the operator's pages (a force)."""
