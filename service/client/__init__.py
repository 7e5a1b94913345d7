"""The Python client of the ktune API: `Client(url, api_key).submit(spec)`, `.wait(job_id)`, and the rest.

    from service.client import Client

    with Client("http://127.0.0.1:8000", api_key) as ktune:
        job = ktune.wait(ktune.submit(json.load(open("job.json"))).id, timeout=600)
        ktune.download_best_model(job.id, "best.keras")

Importing it loads no TensorFlow. Errors: `KtuneError` (the service's answer), `Unreachable`, `WaitTimeout`.
"""

from service.client.client import DEFAULT_URL, Client
from service.client.errors import KtuneError, Unreachable, WaitTimeout
from service.client.event_stream import Event

__all__ = ["DEFAULT_URL", "Client", "Event", "KtuneError", "Unreachable", "WaitTimeout"]
