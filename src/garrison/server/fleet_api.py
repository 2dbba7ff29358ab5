"""The fleet admin API: inventory, tags, groups, desired state."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
