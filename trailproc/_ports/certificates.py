"""Where SNS signing certificates come from: an HTTPS GET, bounded in time and size.

`trailproc._pipeline.trust` checks the URL (https, `sns.<region>.amazonaws.com`) before it asks
this port, and caches what it returns. Redirects are not followed: a redirect could lead
away from the host that was checked.
"""

from __future__ import annotations

__all__ = ["HttpCertificates"]

# A PEM certificate is a few kilobytes.
_MAX_BYTES = 64 * 1024


class HttpCertificates:
    """Fetches a certificate over HTTP(S) with aiohttp (TLS verified).

    aiohttp is imported on the first fetch: most runs never verify a signature, and a
    Lambda cold start would pay for the import (~0.2 s of CPU, more than botocore).
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    async def fetch(self, url: str) -> bytes:
        import aiohttp

        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.get(url, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
                body = await response.content.read(_MAX_BYTES + 1)
        except aiohttp.ClientError as exc:
            raise OSError(str(exc) or type(exc).__name__) from None
        if len(body) > _MAX_BYTES:
            raise OSError(f"answer larger than {_MAX_BYTES} bytes, not a certificate")
        return body
