"""Epoch plans for WarpDrive: tell the mount what a loader will read next.

A plan is the ordered list of files (or byte ranges of them) one reader of a training job
will read in an epoch. The daemon fetches each entry into its cache before the reader gets
there, keeping about ten seconds of the reader's pace ahead. This module talks to the
daemon with the standard library only: through its control API (``POST /api/v1/plans``), or,
from a process that can reach the mount but not the control socket (a container given only
the mount), through the control file ``<mount>/.warpdrive/plan``.

Connection, in order: the ``socket``, ``url`` or ``mount`` argument, then the environment:
``WARPDRIVE_SOCKET`` (the control socket's path), ``WARPDRIVE_API`` (``http://host:port``,
with ``WARPDRIVE_TOKEN``), ``WARPDRIVE_MOUNT`` (the mount point as this process sees it).
"""

import errno as _errno
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


def _mount_of(socket=None, url=None, mount=None, **_):
    """The mount whose control file to use, when no socket or URL is given or set."""
    if socket or url:
        return None
    if mount:
        return mount
    if os.environ.get("WARPDRIVE_SOCKET") or os.environ.get("WARPDRIVE_API"):
        return None
    return os.environ.get("WARPDRIVE_MOUNT")


def _numbers(fields):
    out = {}
    for k, v in fields.items():
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def _control(mount, text):
    """Writes ``text`` to the mount's control file, submits it (``fsync``) and returns the
    file's status text; raises PlanError with the daemon's reason when refused."""
    path = os.path.join(mount, ".warpdrive", "plan")
    try:
        fd = os.open(path, os.O_RDWR if text else os.O_RDONLY)
    except OSError as e:
        raise PlanError(f"the control file {path} could not be opened: {e}") from e
    try:
        if text:
            data = memoryview(text.encode())
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done : done + (1 << 20)], done)
            try:
                os.fsync(fd)
            except OSError as e:
                if e.errno != _errno.EINVAL:
                    raise PlanError(f"the control file {path}: {e}") from e
        chunks = []
        while True:
            b = os.pread(fd, 1 << 16, sum(len(c) for c in chunks))
            if not b:
                break
            chunks.append(b)
        status = b"".join(chunks).decode()
    finally:
        os.close(fd)
    own = next((l[5:] for l in status.splitlines() if l.startswith("this ")), None)
    if text and (own is None or own.startswith("refused: ")):
        raise PlanError(own[len("refused: ") :] if own else "the control file gave no result")
    return status, own


def _control_plans(status):
    plans = []
    for line in status.splitlines():
        if line.startswith("plan "):
            plans.append(_numbers(dict(w.split("=", 1) for w in line.split()[1:])))
    return plans


def _control_line(i, e, root):
    """Entry ``i`` as a line of the control file, its path made ``BACKEND/KEY``."""
    e = _entry(e)
    path = e["path"]
    if path.startswith("wd://"):
        path = path[len("wd://") :]
    elif os.path.isabs(path):
        rel = os.path.relpath(path, root)
        if rel == os.curdir or rel.startswith(os.pardir):
            raise PlanError(f"entry {i + 1} ({path!r}): not under the mount {root}")
        path = rel
    if any(c in path for c in "\t\r\n"):
        raise PlanError(f"entry {i + 1} ({path!r}): a tab or line break cannot go through the control file")
    if "offset" in e:
        return f"{path}\t{e['offset']}\t{e['length']}\n"
    return path + "\n"


def _request(method, path, body=None, socket=None, url=None, token=None, timeout=60.0, mount=None):
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
            "no daemon given: pass socket= (the config's control.socket), url= or mount=, "
            "or set WARPDRIVE_SOCKET, WARPDRIVE_API or WARPDRIVE_MOUNT"
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
    mount = _mount_of(**conn)
    if mount:
        root = os.path.abspath(mount)
        text = f"warpdrive-plan job={job} rank={int(rank)} epoch={int(epoch)}\n"
        text += "".join(_control_line(i, p, root) for i, p in enumerate(paths))
        status, _ = _control(mount, text)
        mine = [p for p in _control_plans(status) if p["job"] == job and p["rank"] == int(rank)]
        return mine[0] if mine else None
    body = {"job": job, "rank": int(rank), "epoch": int(epoch), "entries": [_entry(p) for p in paths]}
    return _request("POST", "/api/v1/plans", body, **conn)


def plan_status(**conn):
    """Every plan the daemon keeps: entries reached, ahead, late, and the lead."""
    mount = _mount_of(**conn)
    if mount:
        return _control_plans(_control(mount, "")[0])
    return _request("GET", "/api/v1/plans", **conn)


def clear_plan(job, rank=None, **conn):
    """Drops the job's plans (one rank's when given); how many were dropped."""
    mount = _mount_of(**conn)
    if mount:
        text = f"warpdrive-plan clear job={job}" + ("" if rank is None else f" rank={int(rank)}")
        _, own = _control(mount, text + "\n")
        return int(own.rsplit("plans=", 1)[1])
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
