"""The campaign admin API: rollout campaigns and the fleet update level."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
