"""MoRAG's APIKeyService, reproduced from packages/morag/src/morag/services/auth_service.py @ bb0da91.

Kept byte-compatible on purpose, including its defects (revoke drops the
TTL; listing SCANs), because the Go auth package must interoperate with keys
this code writes and reads.
"""
import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any, Dict, Optional


class APIKeyService:
    """Service for managing API keys and user authentication."""

    def __init__(self, redis_client):
        self.redis = redis_client
        self.key_prefix = "morag:api_keys:"
        self.user_prefix = "morag:users:"

    async def create_api_key(self, user_id: str, description: str = "", expires_days: Optional[int] = None) -> str:
        api_key = secrets.token_urlsafe(32)
        key_hash = hashlib.sha256(api_key.encode()).hexdigest()
        key_data = {
            "user_id": user_id,
            "description": description,
            "created_at": datetime.utcnow().isoformat(),
            "expires_at": (datetime.utcnow() + timedelta(days=expires_days)).isoformat() if expires_days else None,
            "active": True,
        }
        self.redis.setex(
            f"{self.key_prefix}{key_hash}",
            int(timedelta(days=expires_days or 365).total_seconds()),
            json.dumps(key_data),
        )
        return api_key

    async def validate_api_key(self, api_key: str) -> Optional[Dict[str, Any]]:
        key_hash = hashlib.sha256(api_key.encode()).hexdigest()
        data = self.redis.get(f"{self.key_prefix}{key_hash}")
        if not data:
            return None
        key_data = json.loads(data)
        if not key_data.get("active", False):
            return None
        if key_data.get("expires_at"):
            expires_at = datetime.fromisoformat(key_data["expires_at"])
            if datetime.utcnow() > expires_at:
                return None
        return key_data

    def get_user_queue_name(self, user_id: str, worker_type: str = "gpu") -> str:
        return f"{worker_type}-tasks-{user_id}"

    def get_cpu_queue_name(self, user_id: str) -> str:
        return f"cpu-tasks-{user_id}"

    def get_default_queue_name(self) -> str:
        return "celery"

    async def list_user_api_keys(self, user_id: str) -> list:
        keys = []
        for key in self.redis.scan_iter(match=f"{self.key_prefix}*"):
            data = self.redis.get(key)
            if data:
                key_data = json.loads(data)
                if key_data.get("user_id") == user_id:
                    keys.append({k: v for k, v in key_data.items() if k != "key_hash"})
        return keys

    async def revoke_api_key(self, api_key: str) -> bool:
        key_hash = hashlib.sha256(api_key.encode()).hexdigest()
        key_name = f"{self.key_prefix}{key_hash}"
        data = self.redis.get(key_name)
        if not data:
            return False
        key_data = json.loads(data)
        key_data["active"] = False
        self.redis.set(key_name, json.dumps(key_data))
        return True
