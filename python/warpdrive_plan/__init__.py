"""Epoch plans for WarpDrive: tell the mount what a loader will read next.

A plan is the ordered list of files (or byte ranges of them) one reader of a training job
will read in an epoch. The daemon fetches each entry into its cache before the reader gets
there, keeping about ten seconds of the reader's pace ahead. This module talks to the
daemon's control API (``POST /api/v1/plans``) with the standard library only.

Connection, in order: the ``socket``/``url`` arguments, then ``WARPDRIVE_SOCKET`` (the
control socket's path) or ``WARPDRIVE_API`` (``http://host:port``, with ``WARPDRIVE_TOKEN``).
"""

import http.client
import json
import os
import socket as _socket
import warnings

__all__ = [
    "PlanError",
    "submit_plan",
    "plan_status",
    "clear_plan",
    "PlannedSampler",
    "plan_shards",
]


class PlanError(Exception):
    """The daemon refused a request (the message is its reason) or could not be reached."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def _request(method, path, body=None, socket=None, url=None, token=None, timeout=60.0):
    socket = socket or (None if url else os.environ.get("WARPDRIVE_SOCKET"))
    url = url or os.environ.get("WARPDRIVE_API")
    token = token or os.environ.get("WARPDRIVE_TOKEN")
    headers = {"Content-Type": "application/json"}
    if socket:
        conn = _UnixConnection(socket, timeout)
    elif url:
        from urllib.parse import urlsplit

        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise PlanError(f"WARPDRIVE_API {url!r}: expected http://HOST:PORT")
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
        if token:
            headers["Authorization"] = f"Bearer {token}"
    else:
        raise PlanError(
            "no daemon given: pass socket= (the config's control.socket) or url=, "
            "or set WARPDRIVE_SOCKET or WARPDRIVE_API"
        )
    data = None if body is None else json.dumps(body).encode()
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except OSError as e:
        raise PlanError(f"the daemon could not be reached: {e}") from e
    finally:
        conn.close()
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    if resp.status >= 300:
        reason = answer.get("error") if isinstance(answer, dict) else raw.decode(errors="replace")
        raise PlanError(f"{resp.status}: {reason}")
    return answer


def _entry(e):
    if isinstance(e, (str, os.PathLike)):
        return {"path": os.fspath(e)}
    path, offset, length = e
    return {"path": os.fspath(path), "offset": int(offset), "length": int(length)}


def submit_plan(paths, job, rank=0, epoch=0, **conn):
    """Submits the order one reader will read an epoch in and returns the plan's status.

    ``paths``: paths under the mount point (or ``BACKEND/KEY``), or ``(path, offset,
    length)`` tuples for byte ranges. Replaces the job and rank's plan of an earlier epoch.
    Raises :class:`PlanError` with the daemon's reason when refused.
    """
    body = {"job": job, "rank": int(rank), "epoch": int(epoch), "entries": [_entry(p) for p in paths]}
    return _request("POST", "/api/v1/plans", body, **conn)


def plan_status(**conn):
    """Every plan the daemon keeps: entries reached, ahead, late, and the lead."""
    return _request("GET", "/api/v1/plans", **conn)


def clear_plan(job, rank=None, **conn):
    """Drops the job's plans (one rank's when given); how many were dropped."""
    q = "" if rank is None else f"?rank={int(rank)}"
    return _request("DELETE", f"/api/v1/plans/{job}{q}", **conn)["cleared"]


def _submit_or_warn(sampler, paths, epoch):
    try:
        submit_plan(paths, sampler.job, sampler.rank, epoch, **sampler.conn)
    except PlanError as e:
        if not sampler._warned:
            warnings.warn(f"warpdrive: epoch plan not submitted ({e}); reading without one")
            sampler._warned = True


class PlannedSampler:
    """Wraps a sampler (anything iterable over dataset indices, e.g. a PyTorch
    ``RandomSampler`` or ``DistributedSampler``): each time an epoch starts, the order it
    yields is submitted as the plan of ``job`` and ``rank``, with ``paths[i]`` the file of
    index ``i``. Call ``set_epoch`` as with ``DistributedSampler`` (it is passed on).
    """

    def __init__(self, sampler, paths, job, rank=0, **conn):
        self.sampler = sampler
        self.paths = list(paths)
        self.job = job
        self.rank = rank
        self.conn = conn
        self.epoch = 0
        self._warned = False

    def set_epoch(self, epoch):
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        order = list(iter(self.sampler))
        _submit_or_warn(self, [self.paths[i] for i in order], self.epoch)
        return iter(order)

    def __len__(self):
        return len(self.sampler)


def plan_shards(shards, job, rank=0, epoch=0, **conn):
    """Submits a shard list (WebDataset: after your shuffle) as the epoch's plan and returns
    it unchanged; warns and carries on if the daemon cannot take it."""
    shards = list(shards)
    try:
        submit_plan(shards, job, rank, epoch, **conn)
    except PlanError as e:
        warnings.warn(f"warpdrive: epoch plan not submitted ({e}); reading without one")
    return shards
