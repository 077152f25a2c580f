"""REST API (FastAPI) over the service layer; routes hold no business logic."""
