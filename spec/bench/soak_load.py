#!/usr/bin/env python3
"""spec/bench/soak_load.py: the load and the measurements of spec/bench/soak.sh.

One long-lived process per role, each with persistent HTTPS connections to
the apiserver (the admin token; no kubectl per operation):

  churn    fills the namespace to N DittoServers, then for MINUTES sends
           RATE operations a second: creates (new names, never reused),
           spec updates (image tag, memory limit, replicas 0 <-> 1) and
           deletes (then the two PVCs the StatefulSet left), mixed so that
           the population stays near N. Per second one row in OPS_CSV;
           cumulative counters in STATE (JSON, rewritten every second).
  standin  THE POD STAND-IN, NOT A KUBELET. Nothing runs: it creates a Node
           object (soak-standin-node, a stand-in too: no kubelet behind it;
           tainted NoSchedule so that no real scheduler puts pods there),
           keeps it Ready (its Lease renewed every 10 s, its Ready condition
           every 30 s, so kube-controller-manager's node lifecycle
           controller leaves it alone), and for every pod of the namespace:
             binds it to that Node (pods/binding), as a scheduler would;
             1-3 s later writes pods/status phase Running, containers
               running and not ready (Ready=False); no pod IP unless
               --pod-ips 1 (see pod_status());
             2-8 s later ready (Ready=True, ContainersReady=True);
             then flips it unready after an exponential time of mean FLIP
               seconds (readiness probe failing: running, not ready; or,
               with probability CRASH, a crash loop: waiting
               CrashLoopBackOff, lastState terminated exit code 1,
               restartCount + 1) and ready again 5-30 s later;
             a pod being deleted (deletionTimestamp, which the apiserver
               sets on a bound pod and then waits for its kubelet) is
               deleted for good (gracePeriodSeconds 0) 0.2-1.5 s later,
               as a kubelet does once its containers have stopped.
           The StatefulSet controller turns those pod states into
           status.readyReplicas, from which the operator's policy derives
           the DittoServer's phase and Ready condition (and pod_problems()
           reads the CrashLoopBackOff). Counters in STATE.
  sample   every INTERVAL s, one CSV row on the operator: VmRSS, RssAnon
           (malloc'd memory, free chunks glibc keeps resident, the Lua
           states, stacks), the heap as the allocator counts it
           (dittofs_heap_inuse_bytes: allocated and not freed;
           dittofs_heap_free_bytes: free bytes it holds; glibc's
           mallinfo2), open fds, CPU, reconciles/s, the window's reconcile
           p50/p99 (from the deltas of the
           controller_runtime_reconcile_time_seconds buckets), workqueue
           depth, informer cache bytes, error and warning log lines, and
           the churn's and the stand-in's counters. Cumulative histogram
           buckets go to HIST_CSV, the log lines to LINES.
  report   from those files: growth of RSS, fds and heap (the allocator's
           in-use bytes; RssAnon when the operator does not export them)
           over the last half-hour (or half), RssAnon's and the free
           bytes' growth for information, the memory at 10-minute marks,
           p99 per span, the log lines; key=value lines, then
           summary_json=...; exit 1 when a criterion fails.
"""
import argparse
import csv
import heapq
import http.client
import json
import os
import queue
import random
import re
import signal
import ssl
import sys
import threading
import time
import urllib.parse

DS_PATH = "/apis/dittofs.dittofs.com/v1alpha1/namespaces/%s/dittoservers"
NODE = "soak-standin-node"
STOP = threading.Event()


def on_term(signum, frame):
    STOP.set()


def write_state(path, d):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(d, f)
    os.replace(tmp, path)


def read_state(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def now_rfc3339(micro=False):
    t = time.time()
    s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    if micro:
        return s + ".%06dZ" % int((t % 1) * 1e6)
    return s + "Z"


class Kube:
    """One persistent HTTPS connection (not thread-safe: one per thread)."""

    def __init__(self, server, ca, token, timeout=30):
        u = urllib.parse.urlsplit(server)
        self.host, self.port = u.hostname, u.port or 443
        self.ctx = ssl.create_default_context(cafile=ca)
        self.token = token
        self.timeout = timeout
        self.conn = None

    def _connect(self, timeout):
        return http.client.HTTPSConnection(self.host, self.port,
                                           context=self.ctx, timeout=timeout)

    def req(self, method, path, body=None,
            ctype="application/json"):
        """(status, parsed JSON or text); status 0 on a connection error."""
        data = None
        headers = {"Authorization": "Bearer " + self.token,
                   "Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(
                body).encode()
            headers["Content-Type"] = ctype
        err = ""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = self._connect(self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                try:
                    out = json.loads(raw) if raw else {}
                except ValueError:
                    out = raw.decode(errors="replace")
                return r.status, out
            except (OSError, http.client.HTTPException) as e:
                err = repr(e)
                self.conn.close()
                self.conn = None
        return 0, err

    def watch(self, path, rv):
        """Yields watch events; returns at the stream's end."""
        conn = self._connect(330)
        sep = "&" if "?" in path else "?"
        conn.request("GET", "%s%swatch=1&allowWatchBookmarks=true"
                     "&timeoutSeconds=300&resourceVersion=%s" %
                     (path, sep, rv),
                     headers={"Authorization": "Bearer " + self.token})
        r = conn.getresponse()
        try:
            if r.status != 200:
                raise http.client.HTTPException(
                    "watch %s: HTTP %d %s" % (path, r.status, r.read()[:200]))
            for line in r:
                if STOP.is_set():
                    return
                line = line.strip()
                if line:
                    yield json.loads(line)
        finally:
            conn.close()


def kube_from(args, timeout=30):
    with open(args.token_file) as f:
        token = f.read().strip()
    return Kube(args.server, args.ca, token, timeout)


# --- churn -----------------------------------------------------------------

class Churn:
    def __init__(self, args):
        self.a = args
        self.base = DS_PATH % args.namespace
        with open(args.sample) as f:
            self.sample = json.load(f)
        self.lock = threading.Lock()
        self.live = {}  # name -> replicas
        self.busy = set()  # names with an operation in flight
        self.seq = 0
        self.c = {k: 0 for k in ("ops", "create", "update", "delete", "ok",
                                 "notfound", "conflict", "errors", "pvc",
                                 "behind", "fill")}
        self.sec = {k: 0 for k in ("create", "update", "delete", "ok",
                                   "notfound", "conflict", "errors")}
        self.lat_max = 0.0
        self.jobs = queue.Queue()
        self.err_out = open(args.errors, "a")

    def new_name(self):
        self.seq += 1
        return "soak-%06d" % self.seq

    def body(self, name):
        b = json.loads(json.dumps(self.sample))
        b["metadata"] = {"name": name, "namespace": self.a.namespace,
                         "labels": {"dittofs.dittofs.com/soak": "true"}}
        return b

    def pick(self):
        """An operation (kind, name, patch) keeping the population near N."""
        with self.lock:
            n = len(self.live)
            d = (self.a.n - n) / max(1.0, 0.05 * self.a.n)
            d = max(-1.0, min(1.0, d))
            pc, pd = 0.3 + 0.2 * d, 0.3 - 0.2 * d
            x = random.random()
            idle = [k for k in self.live if k not in self.busy] \
                if x >= pc else []
            if x < pc or not idle:
                name = self.new_name()
                self.busy.add(name)
                return "create", name, None
            name = random.choice(idle)
            self.busy.add(name)
            if x < pc + pd:
                return "delete", name, None
            y = random.random()
            if y < 0.4:
                patch = {"spec": {"image": "ghcr.io/marmos91/dittofs:soak-%d"
                                  % random.randint(1, 4)}}
            elif y < 0.7:
                patch = {"spec": {"resources": {"limits": {
                    "memory": "%dGi" % random.randint(2, 6)}}}}
            else:
                r = 1 - self.live[name]
                patch = {"spec": {"replicas": r}}
            return "update", name, patch

    def run_op(self, kube, op):
        kind, name, patch = op
        t0 = time.monotonic()
        if kind == "create":
            st, out = kube.req("POST", self.base, self.body(name))
        elif kind == "delete":
            st, out = kube.req("DELETE", "%s/%s" % (self.base, name))
        else:
            st, out = kube.req("PATCH", "%s/%s" % (self.base, name), patch,
                               "application/merge-patch+json")
        lat = time.monotonic() - t0
        if kind == "delete" and st in (200, 202, 404):
            # What the StatefulSet's volumeClaimTemplates left (the
            # operator never deletes PVCs); a user deleting a server
            # deletes its data too. Not counted as operations.
            for claim in ("metadata", "content"):
                s2, _ = kube.req("DELETE",
                                 "/api/v1/namespaces/%s/"
                                 "persistentvolumeclaims/%s-%s-0" %
                                 (self.a.namespace, claim, name))
                with self.lock:
                    self.c["pvc"] += 1
        with self.lock:
            self.busy.discard(name)
            self.lat_max = max(self.lat_max, lat)
            if 200 <= st < 300:
                res = "ok"
                if kind == "create":
                    self.live[name] = self.sample["spec"].get("replicas", 1)
                elif kind == "delete":
                    self.live.pop(name, None)
                elif "replicas" in patch["spec"]:
                    if name in self.live:
                        self.live[name] = patch["spec"]["replicas"]
            elif st == 404:
                res = "notfound"
                self.live.pop(name, None)
            elif st == 409:
                res = "conflict"
            else:
                res = "errors"
            self.c[res] += 1
            self.sec[res] += 1
            if res == "errors":
                self.err_out.write("%s %s %s %s %s\n" % (
                    now_rfc3339(), kind, name, st,
                    json.dumps(out)[:500]))
                self.err_out.flush()

    def worker(self):
        kube = kube_from(self.a)
        while True:
            op = self.jobs.get()
            if op is None:
                return
            self.run_op(kube, op)
            self.jobs.task_done()

    def list_existing(self):
        kube = kube_from(self.a)
        st, out = kube.req("GET", self.base)
        if st != 200:
            sys.exit("churn: cannot list DittoServers: %s %s" % (st, out))
        for it in out.get("items", []):
            name = it["metadata"]["name"]
            if it["metadata"].get("deletionTimestamp"):
                continue
            self.live[name] = it.get("spec", {}).get("replicas", 1)
            m = re.match(r"soak-(\d+)$", name)
            if m:
                self.seq = max(self.seq, int(m.group(1)))

    def state(self, phase):
        with self.lock:
            d = dict(self.c)
            d["population"] = len(self.live)
            d["phase"] = phase
            d["t"] = time.time()
        write_state(self.a.state, d)

    def run(self):
        self.list_existing()
        threads = [threading.Thread(target=self.worker, daemon=True)
                   for _ in range(self.a.workers)]
        for t in threads:
            t.start()
        # Fill to N, FILL_RATE creates a second.
        step = 1.0 / self.a.fill_rate
        nxt = time.monotonic()
        while not STOP.is_set():
            with self.lock:
                need = self.a.n - len(self.live) - len(self.busy)
            if need <= 0:
                break
            name = None
            with self.lock:
                name = self.new_name()
                self.busy.add(name)
                self.c["fill"] += 1
            self.jobs.put(("create", name, None))
            nxt += step
            time.sleep(max(0.0, nxt - time.monotonic()))
            self.state("fill")
        self.jobs.join()
        self.state("fill")
        print("# churn: filled, %d DittoServers" % len(self.live),
              flush=True)
        with self.lock:
            self.sec = {k: 0 for k in self.sec}
        with open(self.a.ops_csv, "w") as f:
            w = csv.writer(f)
            w.writerow(["t", "create", "update", "delete", "ok", "notfound",
                        "conflict", "errors", "population", "behind",
                        "lat_max_ms"])
            t_end = time.monotonic() + self.a.minutes * 60
            step = 1.0 / self.a.rate
            nxt = time.monotonic()
            sec_end = nxt + 1.0
            while not STOP.is_set() and time.monotonic() < t_end:
                if self.jobs.qsize() > 2 * self.a.rate:
                    # The apiserver is slower than RATE: skip rather than
                    # pile up (counted).
                    with self.lock:
                        self.c["behind"] += 1
                else:
                    op = self.pick()
                    with self.lock:
                        self.c["ops"] += 1
                        self.c[op[0]] += 1
                        self.sec[op[0]] += 1
                    self.jobs.put(op)
                nxt += step
                t = time.monotonic()
                if t >= sec_end:
                    with self.lock:
                        s = self.sec
                        w.writerow(["%.3f" % time.time(), s["create"],
                                    s["update"], s["delete"], s["ok"],
                                    s["notfound"], s["conflict"],
                                    s["errors"], len(self.live),
                                    self.c["behind"],
                                    "%.1f" % (self.lat_max * 1000)])
                        self.sec = {k: 0 for k in self.sec}
                        self.lat_max = 0.0
                    f.flush()
                    self.state("churn")
                    sec_end += 1.0
                time.sleep(max(0.0, nxt - time.monotonic()))
        self.jobs.join()
        self.state("done")
        print("# churn: done, %d operations, %d errors, population %d" %
              (self.c["ops"], self.c["errors"], len(self.live)), flush=True)


# --- the pod stand-in (not a kubelet) ------------------------------------------

class Standin:
    def __init__(self, args):
        self.a = args
        self.ns = args.namespace
        self.lock = threading.Lock()
        self.pods = {}  # uid -> dict
        self.timers = []  # (due, seq, uid, action)
        self.tseq = 0
        self.jobs = queue.Queue()
        self.c = {k: 0 for k in ("bind", "start", "ready", "unready",
                                 "crash", "delete", "errors", "gone",
                                 "relist", "heartbeat")}
        self.ipseq = 0
        self.err_out = open(args.errors, "a")

    def err(self, what, st, out):
        with self.lock:
            self.c["errors"] += 1
        self.err_out.write("%s %s %s %s\n" % (now_rfc3339(), what, st,
                                               json.dumps(out)[:500]))
        self.err_out.flush()

    # The Node object and its heartbeats.
    def node_setup(self, kube):
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {
                "dittofs.dittofs.com/soak-standin": "true",
                "kubernetes.io/hostname": NODE},
                "annotations": {"dittofs.dittofs.com/standin":
                                "soak.sh pod stand-in: a Node object "
                                "without a kubelet"}},
            "spec": {"taints": [{"key": "dittofs.dittofs.com/soak-standin",
                                 "value": "true",
                                 "effect": "NoSchedule"}]},
        }
        st, out = kube.req("POST", "/api/v1/nodes", node)
        if st == 409:
            st, out = kube.req("GET", "/api/v1/nodes/" + NODE)
        if st not in (200, 201):
            sys.exit("standin: cannot create Node %s: %s %s" %
                     (NODE, st, out))
        self.node_uid = out["metadata"]["uid"]
        self.node_status(kube, first=True)
        self.lease_create(kube)

    def lease_create(self, kube):
        """The Node's Lease, owned by it. A Lease left by an earlier run
        (owned by its deleted Node) is replaced: the garbage collector
        would delete it under us."""
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/" \
            "leases"
        kube.req("DELETE", path + "/" + NODE)
        lease = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NODE, "namespace": "kube-node-lease",
                         "ownerReferences": [{
                             "apiVersion": "v1", "kind": "Node",
                             "name": NODE, "uid": self.node_uid}]},
            "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40,
                     "renewTime": now_rfc3339(micro=True)},
        }
        st, out = kube.req("POST", path, lease)
        if st not in (201, 409):
            self.err("lease", st, out)

    def node_status(self, kube, first=False):
        t = now_rfc3339()
        status = {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "soak.sh stand-in, not a kubelet",
            "lastHeartbeatTime": t}]}
        if first:
            status["conditions"][0]["lastTransitionTime"] = t
            cap = {"cpu": "1000", "memory": "4000Gi", "pods": "100000"}
            status.update({"capacity": cap, "allocatable": cap,
                           "addresses": [{"type": "InternalIP",
                                          "address": "192.0.2.1"}]})
        st, out = kube.req("PATCH", "/api/v1/nodes/%s/status" % NODE,
                           {"status": status},
                           "application/strategic-merge-patch+json")
        if st != 200:
            self.err("node status", st, out)

    def heartbeat(self):
        kube = kube_from(self.a)
        n = 0
        while not STOP.wait(10):
            n += 1
            st, out = kube.req(
                "PATCH", "/apis/coordination.k8s.io/v1/namespaces/"
                "kube-node-lease/leases/" + NODE,
                {"spec": {"renewTime": now_rfc3339(micro=True)}},
                "application/merge-patch+json")
            if st == 404:
                self.lease_create(kube)
            elif st != 200:
                self.err("lease renew", st, out)
            if n % 3 == 0:
                self.node_status(kube)
            with self.lock:
                self.c["heartbeat"] += 1

    # Timers and requests.
    def at(self, delay, uid, action):
        with self.lock:
            self.tseq += 1
            heapq.heappush(self.timers, (time.monotonic() + delay,
                                         self.tseq, uid, action))

    def timer_loop(self):
        while not STOP.is_set():
            due = []
            with self.lock:
                t = time.monotonic()
                while self.timers and self.timers[0][0] <= t:
                    due.append(heapq.heappop(self.timers))
            for _, _, uid, action in due:
                self.jobs.put((uid, action))
            time.sleep(0.05)

    def pod_status(self, p, ready, crash=False):
        t = now_rfc3339()
        rs = "True" if ready else "False"
        conds = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": rs,
             "lastTransitionTime": t},
            {"type": "Ready", "status": rs, "lastTransitionTime": t},
        ]
        if not ready:
            conds[2]["reason"] = conds[3]["reason"] = "ContainersNotReady"
        statuses = []
        for cname, image in p["containers"]:
            cs = {"name": cname, "image": image,
                  "imageID": "standin://" + image,
                  "containerID": "standin://%s-%s" % (p["uid"][:8], cname),
                  "ready": ready, "started": not crash,
                  "restartCount": p["restarts"]}
            if crash:
                cs["state"] = {"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off 10s restarting failed container=%s"
                               " pod=%s (soak.sh stand-in)" %
                               (cname, p["name"])}}
                cs["lastState"] = {"terminated": {
                    "exitCode": 1, "reason": "Error",
                    "startedAt": p["started"], "finishedAt": t}}
            else:
                cs["state"] = {"running": {"startedAt": p["started"]}}
            statuses.append(cs)
        inits = [{"name": cname, "image": image,
                  "imageID": "standin://" + image, "ready": True,
                  "restartCount": 0,
                  "state": {"terminated": {
                      "exitCode": 0, "reason": "Completed",
                      "startedAt": p["started"],
                      "finishedAt": p["started"]}}}
                 for cname, image in p["inits"]]
        status = {"phase": "Running", "conditions": conds,
                  "hostIP": "192.0.2.1", "hostIPs": [{"ip": "192.0.2.1"}],
                  "startTime": p["started"], "containerStatuses": statuses}
        if self.a.pod_ips:
            # With an IP, every readiness flip also makes the endpoints
            # and endpointslice controllers rewrite both Services'
            # endpoints: kube-controller-manager work the operator never
            # sees (it does not read them).
            status.update({"podIP": p["ip"], "podIPs": [{"ip": p["ip"]}]})
        if inits:
            status["initContainerStatuses"] = inits
        return {"metadata": {"uid": p["uid"]}, "status": status}

    def do(self, kube, uid, action):
        with self.lock:
            p = self.pods.get(uid)
            if p is None or (p["deleting"] and action != "delete"):
                return
            name = p["name"]
        base = "/api/v1/namespaces/%s/pods/%s" % (self.ns, name)
        if action == "bind":
            st, out = kube.req("POST", base + "/binding", {
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": self.ns,
                             "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node",
                           "name": NODE}})
        elif action == "delete":
            st, out = kube.req("DELETE", base, {
                "apiVersion": "v1", "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid}})
        else:
            ready = action == "ready"
            with self.lock:
                if action == "crash":
                    p["restarts"] += 1
                body = self.pod_status(p, ready, action == "crash")
            st, out = kube.req("PATCH", base + "/status", body,
                               "application/strategic-merge-patch+json")
        if 200 <= st < 300:
            with self.lock:
                self.c[action] += 1
                if action in ("start", "ready", "unready", "crash"):
                    p["ready"] = action == "ready"
                    p["running"] = True
            if action in ("start", "unready", "crash"):
                self.at(random.uniform(2, 8) if action == "start"
                        else random.uniform(5, 30), uid, "ready")
            elif action == "ready":
                self.at(random.expovariate(1.0 / self.a.flip), uid, "flip")
        elif st in (404, 409):
            with self.lock:
                self.c["gone"] += 1  # deleted meanwhile, or bound twice
        else:
            self.err("%s %s" % (action, name), st, out)

    def worker(self):
        kube = kube_from(self.a)
        while True:
            uid, action = self.jobs.get()
            if action == "flip":
                action = "crash" if random.random() < self.a.crash \
                    else "unready"
            self.do(kube, uid, action)

    # Pods, from a list and watch of the namespace.
    def on_pod(self, typ, o):
        md = o["metadata"]
        uid = md["uid"]
        if typ == "DELETED":
            with self.lock:
                self.pods.pop(uid, None)
            return
        spec = o.get("spec", {})
        with self.lock:
            p = self.pods.get(uid)
            if p is None:
                self.ipseq += 1
                p = {"uid": uid, "name": md["name"], "deleting": False,
                     "bound": False, "started": None, "ready": False,
                     "running": False, "restarts": 0,
                     "ip": "10.%d.%d.%d" % (200 + self.ipseq // 65536 % 50,
                                            self.ipseq // 256 % 256,
                                            self.ipseq % 256),
                     "containers": [(c["name"], c.get("image", ""))
                                    for c in spec.get("containers", [])],
                     "inits": [(c["name"], c.get("image", ""))
                               for c in spec.get("initContainers", [])]}
                self.pods[uid] = p
            first_delete = md.get("deletionTimestamp") and not p["deleting"]
            if first_delete:
                p["deleting"] = True
            need_bind = not spec.get("nodeName") and not p["bound"]
            if need_bind:
                p["bound"] = True
            need_start = (spec.get("nodeName") == NODE and
                          p["started"] is None and not p["deleting"])
            if need_start:
                p["started"] = now_rfc3339()
        if first_delete:
            if spec.get("nodeName"):
                self.at(random.uniform(0.2, 1.5), uid, "delete")
            return
        if need_bind:
            self.jobs.put((uid, "bind"))
        if need_start:
            self.at(random.uniform(1, 3), uid, "start")

    def pod_loop(self):
        kube = kube_from(self.a)
        path = "/api/v1/namespaces/%s/pods" % self.ns
        while not STOP.is_set():
            st, out = kube.req("GET", path)
            if st != 200:
                self.err("list pods", st, out)
                STOP.wait(1)
                continue
            with self.lock:
                self.c["relist"] += 1
                seen = {it["metadata"]["uid"] for it in out["items"]}
                for uid in [u for u in self.pods if u not in seen]:
                    del self.pods[uid]
            for it in out["items"]:
                self.on_pod("ADDED", it)
            rv = out["metadata"]["resourceVersion"]
            relist = False
            while not STOP.is_set() and not relist:
                try:
                    for ev in kube.watch(path, rv):
                        typ, o = ev["type"], ev["object"]
                        if typ == "ERROR":  # 410 Gone: list again
                            relist = True
                            break
                        rv = o["metadata"]["resourceVersion"]
                        if typ != "BOOKMARK":
                            self.on_pod(typ, o)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    self.err("watch pods", 0, repr(e))
                    relist = True
                    STOP.wait(1)

    def state_loop(self):
        while not STOP.wait(1):
            with self.lock:
                d = dict(self.c)
                d["pods"] = len(self.pods)
                d["pods_ready"] = sum(1 for p in self.pods.values()
                                      if p["ready"] and not p["deleting"])
                d["pods_unready"] = sum(1 for p in self.pods.values()
                                        if p["running"] and not p["ready"]
                                        and not p["deleting"])
                d["pods_pending"] = sum(1 for p in self.pods.values()
                                        if not p["running"])
                d["t"] = time.time()
            write_state(self.a.state, d)

    def run(self):
        print("# standin: pod stand-in, not a kubelet: Node %s (a Node "
              "object without a kubelet), pods of namespace %s" %
              (NODE, self.ns), flush=True)
        self.node_setup(kube_from(self.a))
        for target in [self.heartbeat, self.timer_loop, self.pod_loop,
                       self.state_loop] + [self.worker] * self.a.workers:
            threading.Thread(target=target, daemon=True).start()
        while not STOP.wait(1):
            pass


# --- sample ----------------------------------------------------------------

METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
HIST = "controller_runtime_reconcile_time_seconds"


def scrape(url):
    """{name: total over label sets}, {le: cumulative count}."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("GET", u.path)
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    sums, buckets = {}, {}
    for line in text.splitlines():
        if line.startswith("dittofs_cache_objects{"):
            m = re.match(r'dittofs_cache_objects\{.*resource="([^"]*)".*\}'
                         r'\s+(\S+)', line)
            if m:
                sums["cache_objects:" + m.group(1)] = float(m.group(2))
        m = METRIC_RE.match(line)
        if not m:
            continue
        name, labels, val = m.group(1), m.group(2) or "", float(m.group(3))
        sums[name] = sums.get(name, 0.0) + val
        if name == HIST + "_bucket":
            le = re.search(r'le="([^"]*)"', labels).group(1)
            le = float("inf") if le == "+Inf" else float(le)
            buckets[le] = buckets.get(le, 0.0) + val
    return sums, buckets


def quantile(q, deltas):
    """Prometheus' histogram_quantile over {le: cumulative count}."""
    les = sorted(deltas)
    if not les or deltas[les[-1]] <= 0:
        return float("nan")
    rank = q * deltas[les[-1]]
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = deltas[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return les[-1]


def proc(pid):
    st = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.split()[0] if v.split() else ""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return int(st["VmRSS"]), int(st["RssAnon"]), fds, ticks


def gauge(sums, name):
    """A scraped gauge as an integer, "" when absent (a failed scrape, an
    operator without it)."""
    return "%d" % sums[name] if name in sums else ""


def sample(args):
    hz = os.sysconf("SC_CLK_TCK")
    # Columns are appended, never moved: soak.sh's plot and progress
    # lines address them by number (anon_kib was heap_kib before the
    # heap gauges; report() reads either).
    cols = ["t", "elapsed_s", "rss_kib", "anon_kib", "fds", "cpu_pct",
            "reconciles_per_s", "reconcile_errors", "p50_ms", "p99_ms",
            "workqueue_depth", "cache_bytes", "cache_objects",
            "metrics_rss_bytes", "metrics_open_fds", "error_lines",
            "warn_lines", "ops_per_s", "population", "churn_errors",
            "pods", "pods_ready", "pods_unready", "pods_pending",
            "standin_errors", "cached_dittoservers", "cached_statefulsets",
            "cached_pods", "heap_inuse_bytes", "heap_free_bytes"]
    out = open(args.out, "w", buffering=1)
    w = csv.writer(out)
    w.writerow(cols)
    hist = open(args.hist, "w", buffering=1)
    hw = csv.writer(hist)
    lines = open(args.lines, "a", buffering=1)
    logpos = 0
    t_start = time.time()
    prev = None
    hist_header = None
    nxt = time.monotonic()
    while not STOP.is_set():
        try:
            rss, anon, fds, ticks = proc(args.pid)
        except OSError:
            print("# sample: operator %d gone" % args.pid, flush=True)
            return
        try:
            sums, buckets = scrape(args.metrics)
        except (OSError, http.client.HTTPException):
            sums, buckets = {}, {}
        t = time.time()
        errs = warns = 0
        try:
            with open(args.log, "rb") as f:
                f.seek(logpos)
                chunk = f.read()
            cut = chunk.rfind(b"\n") + 1
            logpos += cut
            for line in chunk[:cut].decode(errors="replace").splitlines():
                if "level=error" in line:
                    errs += 1
                    lines.write(line + "\n")
                elif "level=warn" in line:
                    warns += 1
                    lines.write(line + "\n")
        except OSError:
            pass
        ch = read_state(args.churn_state)
        sd = read_state(args.standin_state)
        cur = {"t": t, "ticks": ticks, "buckets": buckets,
               "rec": sums.get("controller_runtime_reconcile_total", 0.0),
               "rerr": sums.get(
                   "controller_runtime_reconcile_errors_total", 0.0),
               "ops": ch.get("ops", 0) + ch.get("fill", 0),
               "cerr": ch.get("errors", 0)}
        if buckets:
            if hist_header is None:
                hist_header = sorted(buckets)
                hw.writerow(["t"] + ["+Inf" if le == float("inf") else
                                     repr(le) for le in hist_header])
            hw.writerow(["%.3f" % t] + ["%d" % buckets.get(le, 0)
                                        for le in hist_header])
        if prev is not None:
            dt = t - prev["t"]
            deltas = {le: buckets.get(le, 0) - prev["buckets"].get(le, 0)
                      for le in buckets}
            p50 = quantile(0.50, deltas) * 1000
            p99 = quantile(0.99, deltas) * 1000
            w.writerow([
                "%.3f" % t, "%.1f" % (t - t_start), rss, anon, fds,
                "%.1f" % (100.0 * (ticks - prev["ticks"]) / hz / dt),
                "%.2f" % ((cur["rec"] - prev["rec"]) / dt),
                "%d" % (cur["rerr"] - prev["rerr"]),
                "%.2f" % p50, "%.2f" % p99,
                "%d" % sums.get("workqueue_depth", 0),
                "%d" % sums.get("dittofs_cache_bytes", 0),
                "%d" % sums.get("dittofs_cache_objects", 0),
                "%d" % sums.get("process_resident_memory_bytes", 0),
                "%d" % sums.get("process_open_fds", 0),
                errs, warns,
                "%.2f" % ((cur["ops"] - prev["ops"]) / dt),
                ch.get("population", ""), cur["cerr"] - prev["cerr"],
                sd.get("pods", ""), sd.get("pods_ready", ""),
                sd.get("pods_unready", ""), sd.get("pods_pending", ""),
                sd.get("errors", ""),
                "%d" % sums.get("cache_objects:dittoservers", 0),
                "%d" % sums.get("cache_objects:statefulsets", 0),
                "%d" % sums.get("cache_objects:pods", 0),
                gauge(sums, "dittofs_heap_inuse_bytes"),
                gauge(sums, "dittofs_heap_free_bytes")])
        prev = cur
        nxt += args.interval
        STOP.wait(max(0.0, nxt - time.monotonic()))


# --- report ----------------------------------------------------------------

def report(args):
    rows = list(csv.DictReader(open(args.samples)))
    if len(rows) < 4:
        sys.exit("report: %d samples, too few" % len(rows))
    # "heap" is the allocator's in-use bytes when every sample has them
    # (rows whose scrape failed are left out of the heap's means only),
    # else RssAnon (runs before the gauges, a C library without them).
    have_heap = any(r.get("heap_inuse_bytes") for r in rows)
    for r in rows:
        if "anon_kib" not in r:
            r["anon_kib"] = r["heap_kib"]
        for k in ("t", "rss_kib", "anon_kib", "fds", "p99_ms",
                  "reconciles_per_s", "cpu_pct", "ops_per_s"):
            r[k] = float(r[k])
        for k in ("heap_inuse_bytes", "heap_free_bytes"):
            v = r.get(k)
            r[k.replace("_bytes", "_kib")] = (float(v) / 1024 if v
                                              else None)
        r["heap_kib"] = r["heap_inuse_kib"] if have_heap else r["anon_kib"]
        r["cache_bytes_f"] = float(r["cache_bytes"] or 0)
        r["population_f"] = float(r["population"] or 0)
    R = {"heap_source": ("dittofs_heap_inuse_bytes" if have_heap
                         else "RssAnon")}
    ok = True
    t0, t1 = rows[0]["t"], rows[-1]["t"]
    dur = t1 - t0
    # The analysis span: the last 30 minutes, or the last half when the
    # run is shorter than an hour (the rest is warm-up). Growth compares
    # the means of the span's first and last sixth (5 minutes of 30):
    # means over many samples smooth the single-sample noise (an fd open
    # for one request, a malloc arena not yet trimmed).
    span = 1800.0 if dur >= 3600 - 2 * args.interval else dur / 2
    s0 = t1 - span
    w = max(span / 6, 2.5 * args.interval)
    R["duration_s"] = round(dur)
    R["span_s"] = round(span)
    R["growth_window_s"] = round(w)
    first = [r for r in rows if s0 <= r["t"] <= s0 + w]
    last = [r for r in rows if r["t"] >= t1 - w]
    def mean(rs, col):
        v = [r[col] for r in rs if r[col] is not None]
        return sum(v) / len(v) if v else float("nan")

    # Judged: RSS, fds, heap. Shown: RssAnon, and the free bytes the
    # allocator holds (what RssAnon adds to the heap, until malloc_trim).
    for key, col, judged in (("rss", "rss_kib", True), ("fds", "fds", True),
                             ("heap", "heap_kib", True),
                             ("anon", "anon_kib", False),
                             ("heap_free", "heap_free_kib", False)):
        if col == "heap_free_kib" and not have_heap:
            continue
        a = mean(first, col)
        b = mean(last, col)
        g = 100.0 * (b - a) / a if a else float("nan")
        R[key + "_first"] = round(a, 1)
        R[key + "_last"] = round(b, 1)
        R[key + "_max"] = round(max(r[col] for r in rows
                                    if r["t"] >= s0 and r[col] is not None),
                                1)
        R[key + "_growth_pct"] = round(g, 2)
        if not judged:
            continue
        passed = g <= args.growth_max
        R[key + "_flat"] = "PASS" if passed else "FAIL"
        ok = ok and passed
    # For judging the heap's margin (not criteria): a sample of the heap
    # in use moves by about a MiB with the work in flight and the Lua
    # states' uncollected garbage, so the two windows' means carry that
    # noise. The least-squares slope over the whole span (as % of its mean
    # per 30 minutes, with Pearson's r) and each window's 10th percentile
    # (the floor between bursts) say whether a growth near the limit is a
    # trend.
    if have_heap:
        pts = [((r["t"] - s0) / 60, r["heap_kib"]) for r in rows
               if r["t"] >= s0 and r["heap_kib"] is not None]
        if len(pts) >= 3:
            mx = sum(x for x, _ in pts) / len(pts)
            my = sum(y for _, y in pts) / len(pts)
            sxx = sum((x - mx) ** 2 for x, _ in pts)
            syy = sum((y - my) ** 2 for _, y in pts)
            sxy = sum((x - mx) * (y - my) for x, y in pts)
            if sxx > 0 and syy > 0 and my:
                R["heap_slope_pct_per_30min"] = round(
                    100.0 * sxy / sxx * 30 / my, 2)
                R["heap_slope_r"] = round(sxy / (sxx * syy) ** 0.5, 3)

        def p10(rs):
            v = sorted(r["heap_kib"] for r in rs if r["heap_kib"] is not None)
            return round(v[len(v) // 10], 1) if v else None
        R["heap_p10_first"] = p10(first)
        R["heap_p10_last"] = p10(last)
    # The curve's shape: the memory at every 10 minutes, MiB, each the mean
    # of the samples within 2.5 minutes of the mark (one sample of the
    # heap in use is noise of about a MiB).
    marks = []
    m = 0.0
    while t0 + m * 60 <= t1 + args.interval / 2:
        near = ([r for r in rows if abs(r["t"] - (t0 + m * 60)) <= 150] or
                [min(rows, key=lambda r: abs(r["t"] - (t0 + m * 60)))])

        def mib(col, div=1024.0):
            v = mean(near, col)
            return round(v / div, 2) if v == v else None
        marks.append({"min": int(m), "rss_mib": mib("rss_kib"),
                      "anon_mib": mib("anon_kib"),
                      "heap_inuse_mib": mib("heap_inuse_kib"),
                      "heap_free_mib": mib("heap_free_kib"),
                      "cache_mib": mib("cache_bytes_f", 1048576.0),
                      "dittoservers": round(mean(near, "population_f"))})
        m += 10
    # p99 per span (10 minutes; a sixth of the run when shorter) from the
    # cumulative buckets at its ends.
    hrows = list(csv.reader(open(args.hist)))
    les = [float(x) for x in hrows[0][1:]]
    hist = [(float(h[0]), [float(x) for x in h[1:]]) for h in hrows[1:]]
    plen = 600.0 if dur >= 3600 - 2 * args.interval else dur / 6
    # Span ends: every plen seconds; a remainder shorter than half a span
    # joins the span before it (a p99 over a few samples is noise).
    ends = []
    tb = hist[0][0] + plen
    for i, h in enumerate(hist[1:], 1):
        if h[0] >= tb - args.interval / 2:
            ends.append(i)
            tb = h[0] + plen
    if not ends or ends[-1] != len(hist) - 1:
        if ends and hist[-1][0] - hist[ends[-1]][0] < plen / 2:
            ends[-1] = len(hist) - 1
        else:
            ends.append(len(hist) - 1)
    spans = []
    a = hist[0]
    for i in ends:
        h = hist[i]
        d = {le: h[1][j] - a[1][j] for j, le in enumerate(les)}
        spans.append({"from_min": round((a[0] - t0) / 60, 1),
                      "to_min": round((h[0] - t0) / 60, 1),
                      "reconciles": int(d[les[-1]]),
                      "p50_ms": round(quantile(0.5, d) * 1000, 1),
                      "p99_ms": round(quantile(0.99, d) * 1000, 1)})
        a = h
    R["p99_spans_ms"] = " ".join("%g" % s["p99_ms"] for s in spans)
    R["p99_span_minutes"] = round(plen / 60, 1)
    # Stable: the p99 over the analysis span (the late half) at most
    # twice the p99 from the end of the first span (warm-up: the fill and
    # the first convergence) to the start of the analysis span. Both from
    # the bucket deltas over many reconciles; the buckets are a factor
    # 2-2.5 apart (0.05, 0.1, 0.25, 0.5, 1, ...), so an interpolated p99
    # moving less than one bucket cannot be told from noise.
    def at(t):
        return min(hist, key=lambda h: abs(h[0] - t))

    def p99_between(ha, hb):
        d = {le: hb[1][j] - ha[1][j] for j, le in enumerate(les)}
        return round(quantile(0.99, d) * 1000, 1), int(d[les[-1]])

    ref, nref = p99_between(hist[ends[0]], at(s0))
    late, nlate = p99_between(at(s0), hist[-1])
    R["p99_ref_ms"] = ref
    R["p99_ref_reconciles"] = nref
    R["p99_late_ms"] = late
    R["p99_late_reconciles"] = nlate
    if nref > 0 and nlate > 0:
        passed = late <= 2 * ref
        R["p99_stable"] = "PASS" if passed else "FAIL"
        ok = ok and passed
    R["reconciles"] = int(sum(s["reconciles"] for s in spans))
    R["reconcile_errors"] = int(sum(float(r["reconcile_errors"])
                                    for r in rows))
    R["cpu_pct_mean"] = round(sum(r["cpu_pct"] for r in rows) / len(rows),
                              1)
    late = [r for r in rows if r["t"] >= s0]
    R["cpu_pct_mean_late"] = round(sum(r["cpu_pct"] for r in late) /
                                   len(late), 1)
    R["reconciles_per_s_mean"] = round(
        sum(r["reconciles_per_s"] for r in late) / len(late), 2)
    R["ops_per_s_mean"] = round(sum(r["ops_per_s"] for r in late) /
                                len(late), 2)
    # What kube-controller-manager has not caught up with: StatefulSets
    # (and their pods) of deleted DittoServers the garbage collector has
    # not deleted yet. The operator caches them (they carry its label), so
    # a growing backlog grows its cache and heap without any leak of its
    # own: heap_excl_cache takes the informer cache's bytes out.
    for r in rows:
        r["backlog"] = float(r["cached_statefulsets"]) - float(
            r["cached_dittoservers"])
        r["heap_excl_cache"] = (r["heap_kib"] - float(r["cache_bytes"]) /
                                1024 if r["heap_kib"] is not None else None)
    R["gc_backlog_first"] = round(sum(r["backlog"] for r in first) /
                                  len(first), 1)
    R["gc_backlog_last"] = round(sum(r["backlog"] for r in last) /
                                 len(last), 1)
    a = mean(first, "heap_excl_cache")
    b = mean(last, "heap_excl_cache")
    R["heap_excl_cache_first"] = round(a, 1)
    R["heap_excl_cache_last"] = round(b, 1)
    R["heap_excl_cache_growth_pct"] = round(100.0 * (b - a) / a, 2)
    R["churn_errors"] = int(sum(float(r["churn_errors"] or 0)
                                for r in rows))
    R["standin_errors"] = rows[-1]["standin_errors"]
    # Log lines: no fault is injected in this soak, so every error line
    # counts against it; warnings are listed with their counts.
    msgs = {"error": {}, "warn": {}}
    for line in open(args.lines, errors="replace"):
        m = re.search(r'level=(error|warn) msg=("(?:[^"\\]|\\.)*"|\S+)',
                      line)
        if m:
            d = msgs[m.group(1)]
            msg = m.group(2)
            if msg.startswith('"'):
                msg = json.loads(msg)
            d[msg] = d.get(msg, 0) + 1
    R["error_lines"] = sum(msgs["error"].values())
    R["warn_lines"] = sum(msgs["warn"].values())
    passed = R["error_lines"] == 0
    R["no_errors"] = "PASS" if passed else "FAIL"
    ok = ok and passed
    R["result"] = "PASS" if ok else "FAIL"
    for k, v in R.items():
        print("%s=%s" % (k, v))
    for s in spans:
        print("# p99 %5.1f-%5.1f min: %7d reconciles, p50 %7.1f ms, "
              "p99 %7.1f ms" % (s["from_min"], s["to_min"], s["reconciles"],
                                s["p50_ms"], s["p99_ms"]))
    for k in marks:
        print("# memory at %3d+-2.5 min (means): rss %6.2f MiB, RssAnon "
              "%6.2f MiB, heap "
              "in use %s MiB, free %s MiB, informer cache %5.2f MiB, %s "
              "DittoServers" % (
                  k["min"], k["rss_mib"], k["anon_mib"],
                  "%6.2f" % k["heap_inuse_mib"]
                  if k["heap_inuse_mib"] is not None else "-",
                  "%6.2f" % k["heap_free_mib"]
                  if k["heap_free_mib"] is not None else "-",
                  k["cache_mib"], k["dittoservers"]))
    for lvl in ("error", "warn"):
        for msg, n in sorted(msgs[lvl].items(), key=lambda x: -x[1]):
            print("# %s x%d: %s" % (lvl, n, msg))
    R["p99_spans"] = spans
    R["memory_marks"] = marks
    R["error_messages"] = msgs["error"]
    R["warn_messages"] = msgs["warn"]
    print("summary_json=" + json.dumps(R, separators=(",", ":")))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("churn", "standin"):
        p = sub.add_parser(name)
        p.add_argument("--server", required=True)
        p.add_argument("--ca", required=True)
        p.add_argument("--token-file", required=True)
        p.add_argument("--namespace", required=True)
        p.add_argument("--state", required=True)
        p.add_argument("--errors", required=True)
        p.add_argument("--workers", type=int, default=4)
    p = sub.choices["churn"]
    p.add_argument("--sample", required=True)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--rate", type=float, default=10)
    p.add_argument("--fill-rate", type=float, default=25)
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--ops-csv", required=True)
    p = sub.choices["standin"]
    p.add_argument("--flip", type=float, default=300)
    p.add_argument("--crash", type=float, default=0.25)
    p.add_argument("--pod-ips", type=int, default=0)
    p = sub.add_parser("sample")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--interval", type=float, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--hist", required=True)
    p.add_argument("--lines", required=True)
    p.add_argument("--churn-state", required=True)
    p.add_argument("--standin-state", required=True)
    p = sub.add_parser("report")
    p.add_argument("--samples", required=True)
    p.add_argument("--hist", required=True)
    p.add_argument("--lines", required=True)
    p.add_argument("--interval", type=float, default=10)
    p.add_argument("--growth-max", type=float, default=5)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if a.cmd == "churn":
        Churn(a).run()
    elif a.cmd == "standin":
        Standin(a).run()
    elif a.cmd == "sample":
        sample(a)
    else:
        sys.exit(report(a))


if __name__ == "__main__":
    main()
