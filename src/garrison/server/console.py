"""The web console, served under /console behind the same roles as the API."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
