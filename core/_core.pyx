# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The scheduling kernel: cluster state in C arrays and one scheduling pass.

Worked example (4 one-core nodes, EASY, all times in seconds)::

    job  submit  cores  walltime  run
    A    0       2      100       100
    B    0       4      50        50
    C    0       2      60        60

    t=0: A starts (2 free left). B needs 4: it is the head; the shadow time is
         A's requested end, 100, when 4 cores are free; extra = 4 - 4 = 0.
         C fits now (2 cores) but would end at 60 <= 100: it backfills.
    t=60: C ends; B still does not fit (2 free).  t=100: A ends, B starts.

The same workload under ``none`` (no backfill) starts C only at t=150, and under
``conservative`` C gets the same start as EASY here (its reservation at t=0
does not delay B's at t=100).

Drivers (the SimPy simulator, the live agent) feed events by job *slot index*
(``job_idx``, a position in this state) and call ``schedule(now)`` once per
distinct event time; decisions are read back from the ``started`` buffer.
No clock is read here and no I/O is done: time is the caller's ``now``.
"""

cimport cython
from libc.stdint cimport INT64_MAX, int8_t, int32_t, int64_t
from libc.float cimport DBL_MAX
from libc.math cimport exp2
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memcpy, memmove, memset

import numpy as np

cdef int64_t NEVER = INT64_MAX

cdef JobSpec _spec_example
memset(&_spec_example, 0, sizeof(JobSpec))
JOB_SPEC_DTYPE = np.asarray(<JobSpec[:1]>(&_spec_example)).dtype
"""NumPy dtype of ``JobSpec``, derived from the C struct (one source of truth)."""

N_RESOURCES = N_RES
RESOURCE_NAMES = ("cores", "mem_mib", "gpus", "scratch_mib")
ORDERS = {"fcfs": ORDER_FCFS, "sjf": ORDER_SJF, "priority": ORDER_PRIORITY,
          "multifactor": ORDER_MULTIFACTOR}
FAIRSHARE_ALGORITHMS = {"classic": FS_CLASSIC, "fair_tree": FS_FAIR_TREE}
DEPENDENCY_KINDS = {"afterany": DEP_AFTERANY, "afterok": DEP_AFTEROK, "afternotok": DEP_AFTERNOTOK}
LEVELS = {"user": LVL_USER, "group": LVL_GROUP, "qos": LVL_QOS}
LIMIT_COLUMNS = ("running_jobs", "cores", "gpus", "queued_jobs")
BACKFILLS = {"none": BF_NONE, "easy": BF_EASY, "conservative": BF_CONSERVATIVE}
PLACEMENTS = {
    "first_fit": PLACE_FIRST_FIT,
    "best_fit": PLACE_BEST_FIT,
    "spread": PLACE_SPREAD,
    "cons_tres": PLACE_CONS_TRES,
}
JOB_STATES = {
    "new": JS_NEW, "pending": JS_PENDING, "held": JS_HELD, "running": JS_RUNNING,
    "ended": JS_ENDED, "cancelled": JS_CANCELLED,
}
REASONS = {
    "None": WHY_NONE, "Priority": WHY_PRIORITY, "Resources": WHY_RESOURCES,
    "Dependency": WHY_DEPENDENCY, "BeginTime": WHY_BEGIN_TIME, "QOSLimit": WHY_QOS_LIMIT,
    "UserLimit": WHY_USER_LIMIT, "GroupLimit": WHY_GROUP_LIMIT,
    "Reservation": WHY_RESERVATION, "NodeDown": WHY_NODE_DOWN, "Held": WHY_HELD,
    "NotPending": WHY_NOT_PENDING, "BackfillDepth": WHY_BACKFILL_DEPTH,
}
NODE_STATES = {"up": NODE_UP, "booting": NODE_BOOTING, "draining": NODE_DRAINING, "down": NODE_DOWN,
               "off": NODE_OFF}
FAIL_MODES = {"requeue": FAIL_REQUEUE, "fail": FAIL_END}
SERIES_COLUMNS = (
    "time_s", "pending", "running", "used_cores", "up_cores", "nodes_idle", "nodes_allocated",
    "nodes_booting", "nodes_draining", "nodes_down", "nodes_off",
)
cdef enum:
    SERIES_COLS = 11


# ---------------------------------------------------------------- small helpers

cdef int _reserve(void** ptr, int* cap, Py_ssize_t need, size_t elsize) noexcept nogil:
    """Grow ``*ptr`` to hold at least ``need`` elements (doubling). 0 on success."""
    cdef Py_ssize_t new_cap
    cdef void* p
    if need <= cap[0]:
        return 0
    new_cap = cap[0] * 2 if cap[0] > 0 else 16
    while new_cap < need:
        new_cap *= 2
    p = realloc(ptr[0], new_cap * elsize)
    if p == NULL:
        return -1
    ptr[0] = p
    cap[0] = <int>new_cap
    return 0


include "order.pxi"


cdef inline int _ge(const int64_t* have, const int64_t* want) noexcept nogil:
    """have >= want on every resource."""
    cdef int r
    for r in range(N_RES):
        if have[r] < want[r]:
            return 0
    return 1


include "profile.pxi"
include "heap.pxi"
include "nodes.pxi"
include "freetree.pxi"
include "priority.pxi"
include "compat.pxi"

cdef int _grow_f64(double** p, int n) noexcept nogil:
    """Reallocate ``*p`` to ``n`` doubles; nonzero when out of memory."""
    cdef void* q = realloc(p[0], max(n, 1) * sizeof(double))
    if q == NULL:
        return 1
    p[0] = <double*>q
    return 0


include "dependencies.pxi"


cdef int _LIMIT_REASON[3]
_LIMIT_REASON[LVL_USER] = WHY_USER_LIMIT
_LIMIT_REASON[LVL_GROUP] = WHY_GROUP_LIMIT
_LIMIT_REASON[LVL_QOS] = WHY_QOS_LIMIT


# ---------------------------------------------------------------- the state

# ClusterState stays whole in this file: Cython allows ``include`` only at
# module level ("include statement not allowed here" in a class body), so a
# cdef class's methods cannot be split across files. The topics kept in .pxi
# files beside it are module-level functions of the state (nodes.pxi,
# priority.pxi, dependencies.pxi); splitting this class the same way would
# mean rewriting its methods as such functions, not moving them. Its
# sections, in order: configuration (policy, partitions, limits, QoS,
# priority, fairshare, dependencies, holds, reservations); jobs (slots and
# their growth); events (submit, adopt, finish, cancel, dependents settled,
# begin times, starvation, reservations, node failures and requeue,
# checkpoints, node states and types, autoscaling, clocks); queue internals;
# running set; placement; the pass (partitions, EASY, limits, shadow);
# conservative (reservations, the profile); queries (estimate_start,
# why_pending, started and pending jobs, allocations, shadow).


cdef class ClusterState:
    """Cluster state and scheduling passes (see module docstring and _core.pxd)."""

    def __cinit__(self, const int64_t[:, ::1] node_capacity):
        cdef int n, r
        if node_capacity.shape[1] != N_RES:
            raise ValueError(f"node_capacity needs {N_RES} columns, got {node_capacity.shape[1]}")
        self.n_nodes = <int>node_capacity.shape[0]
        self.node_cap = <int64_t*>malloc(max(self.n_nodes, 1) * N_RES * sizeof(int64_t))
        self.node_free = <int64_t*>malloc(max(self.n_nodes, 1) * N_RES * sizeof(int64_t))
        self.node_state = <int8_t*>malloc(max(self.n_nodes, 1) * sizeof(int8_t))
        if self.node_cap == NULL or self.node_free == NULL or self.node_state == NULL:
            raise MemoryError()
        for r in range(N_RES):
            self.total_free[r] = 0
            self.total_cap[r] = 0
            self.extra[r] = 0
        for n in range(self.n_nodes):
            self.node_state[n] = NODE_UP
            for r in range(N_RES):
                self.node_cap[n * N_RES + r] = node_capacity[n, r]
                self.node_free[n * N_RES + r] = node_capacity[n, r]
                self.total_free[r] += node_capacity[n, r]
                self.total_cap[r] += node_capacity[n, r]
        self.first_free_node = 0
        if tree_init(self) != 0:
            raise MemoryError()
        cdef int m = max(self.n_nodes, 1)
        self.node_tasks = <int32_t*>calloc(m, sizeof(int32_t))
        self.idle_since = <int64_t*>calloc(m, sizeof(int64_t))
        self.ready_s = <int64_t*>malloc(m * sizeof(int64_t))
        self.on_since = <int64_t*>calloc(m, sizeof(int64_t))
        self.on_acc_s = <int64_t*>calloc(m, sizeof(int64_t))
        self.node_type = <int32_t*>calloc(m, sizeof(int32_t))
        if (self.node_tasks == NULL or self.idle_since == NULL or self.ready_s == NULL
                or self.on_since == NULL or self.on_acc_s == NULL or self.node_type == NULL):
            raise MemoryError()
        for n in range(self.n_nodes):
            self.ready_s[n] = -1
        self.n_in_state[NODE_UP] = self.n_nodes
        self.max_retries = -1
        self.as_down_next = NEVER
        self.as_up_next = NEVER
        self.boot_next = NEVER
        self.as_decide_s = -NEVER
        self._alloc_types(1)
        self.type_first[0] = 0
        self.type_end[0] = self.n_nodes
        self.type_prov[0] = self.n_nodes
        self.n_part = 1
        self.node_part = <int32_t*>calloc(max(self.n_nodes, 1), sizeof(int32_t))
        if self.node_part == NULL:
            raise MemoryError()
        self.tf = &self.total_free[0]
        for n in range(self.n_nodes):
            self.all_cores += node_capacity[n, RES_CORES]
        self.max_age_s = 7 * 86400
        self.prio_interval_s = 300
        self.prio_phase_s = -1
        self.favor_small = 1
        self.w_age = 1.0
        self.fs_half_life_s = 7 * 86400.0
        self.order = ORDER_FCFS
        self.backfill = BF_EASY
        self.placement = PLACE_FIRST_FIT
        self.bf_depth = 0
        self.need_full_pass = 1
        self.head_idx = -1
        self.shadow_s = NEVER
        self.min_resv_s = NEVER

    def __dealloc__(self):
        free(self.node_cap); free(self.node_free); free(self.node_state); free(self.tree)
        free(self.node_tasks); free(self.idle_since); free(self.ready_s); free(self.on_since)
        free(self.on_acc_s); free(self.node_type)
        self._free_types()
        fifo_release(&self.as_fifo)
        free(self.as_booted); free(self.as_stopped)
        free(self.ckpt_s); free(self.done_s); free(self.node_failed); free(self.fail_hits)
        free(self.jobs); free(self.need); free(self.simple); free(self.job_state)
        free(self.start_s); free(self.end_s); free(self.reserved_s)
        free(self.alloc_off); free(self.alloc_cnt); free(self.alloc)
        free(self.q); free(self.run); free(self.started); free(self.fresh)
        cdef int lvl, k
        for lvl in range(N_LVL):
            free(self.ent_use[lvl]); free(self.ent_lim[lvl]); free(self.ent_seen[lvl])
        free(self.qos_prio); free(self.user_nice); free(self.user_share); free(self.group_share)
        free(self.user_group); free(self.user_usage); free(self.user_acc); free(self.user_fs)
        free(self.group_usage); free(self.fs_keys)
        free(self.starved)
        fifo_release(&self.starve_fifo)
        free(self.node_part); free(self.part_free); free(self.part_cap)
        free(self.run_buf); free(self.run_pos); free(self.requeues); free(self.lost_s)
        free(self.dep_unmet); free(self.dep_ready); free(self.dep_doomed); free(self.dep_cancelled)
        free(self.hold_why); free(self.end_ok); free(self.elig_s); free(self.kid_head)
        free(self.edges)
        heap_release(&self.begin_heap)
        for k in range(self.n_resv):
            free(self.resv[k].on_node)
        free(self.resv)
        prof_release(&self.prof)
        free(self.suffix_min)

    # ------------------------------------------------------------ configuration

    def configure(self, int order, int backfill, int placement, int bf_depth):
        """Set the policy knobs; the next pass rescans everything."""
        if order not in (ORDER_FCFS, ORDER_SJF, ORDER_PRIORITY, ORDER_MULTIFACTOR):
            raise ValueError(f"unknown order code {order}")
        if backfill not in (BF_NONE, BF_EASY, BF_CONSERVATIVE):
            raise ValueError(f"unknown backfill code {backfill}")
        if placement not in (PLACE_FIRST_FIT, PLACE_BEST_FIT, PLACE_SPREAD, PLACE_CONS_TRES):
            raise ValueError(f"unknown placement code {placement}")
        if bf_depth < 0:
            raise ValueError("bf_depth must be >= 0")
        cdef int reorder = order != self.order
        self.order = order
        self.backfill = backfill
        self.placement = placement
        self.bf_depth = bf_depth
        self.need_full_pass = 1
        if reorder:
            self._rekey_queue()

    def set_partitions(self, const int32_t[::1] node_part):
        """Split the nodes into disjoint partitions (node_part[n] = its partition).

        A job runs only on the nodes of its partition (JobSpec.part_idx); each
        partition is scheduled as its own machine (its own head job and
        reservations) over the one queue, limits and fairshare.
        """
        cdef int n, r, p, n_part = 1
        if node_part.shape[0] != self.n_nodes:
            raise ValueError(f"node_part needs one entry per node ({self.n_nodes})")
        for n in range(self.n_nodes):
            if node_part[n] < 0:
                raise ValueError(f"node {n}: partition must be >= 0")
            if node_part[n] + 1 > n_part:
                n_part = node_part[n] + 1
        if self.n_run or self.n_pending:
            raise ValueError("partitions are set before any job is submitted")
        free(self.part_free); free(self.part_cap)
        self.part_free = <int64_t*>calloc(n_part * N_RES, sizeof(int64_t))
        self.part_cap = <int64_t*>calloc(n_part * N_RES, sizeof(int64_t))
        if self.part_free == NULL or self.part_cap == NULL:
            raise MemoryError()
        for n in range(self.n_nodes):
            p = node_part[n]
            self.node_part[n] = p
            if self.node_state[n] == NODE_UP:
                for r in range(N_RES):
                    self.part_free[p * N_RES + r] += self.node_free[n * N_RES + r]
                    self.part_cap[p * N_RES + r] += self.node_cap[n * N_RES + r]
        self.n_part = n_part
        self._set_part(0)
        self.need_full_pass = 1

    def partition_capacity(self):
        """Capacity of the UP nodes per partition, shape (n_partitions, N_RES)."""
        out = np.empty((self.n_part, N_RES), dtype=np.int64)
        cdef int p, r
        for p in range(self.n_part):
            for r in range(N_RES):
                out[p, r] = self.total_cap[r] if self.n_part == 1 else self.part_cap[p * N_RES + r]
        return out

    def set_limits(self, int level, const int64_t[::1] limits):
        """Caps of every user (level 0) or group (1): running jobs, cores, GPUs,
        queued jobs (LIMIT_COLUMNS; 0: no cap).

        A job that would exceed a cap is passed over: it is not the head, gets
        no reservation, is not counted as demand, and its reason names the
        level (UserLimit, GroupLimit, QOSLimit).
        """
        cdef int e, m
        if level not in (LVL_USER, LVL_GROUP):
            raise ValueError("limits for every entity apply to users (0) or groups (1)")
        if limits.shape[0] != N_LIM:
            raise ValueError(f"limits need {N_LIM} values {LIMIT_COLUMNS}")
        for m in range(N_LIM):
            if limits[m] < 0:
                raise ValueError("limits must be >= 0")
            self.def_lim[level][m] = limits[m]
            for e in range(self.n_ent[level]):
                self.ent_lim[level][e * N_LIM + m] = limits[m]
        self._limits_changed()

    def set_qos(self, const double[::1] priority, const int64_t[:, ::1] limits):
        """The QoS table: normalized priority (0..1) and caps (as set_limits) per QoS."""
        cdef int q, m, n = <int>priority.shape[0]
        if limits.shape[0] != n or limits.shape[1] != N_LIM:
            raise ValueError(f"QoS limits must have shape ({n}, {N_LIM})")
        if self._grow_ent(LVL_QOS, n) != 0:
            raise MemoryError()
        for q in range(n):
            self.qos_prio[q] = priority[q]
            for m in range(N_LIM):
                if limits[q, m] < 0:
                    raise ValueError("QoS limits must be >= 0")
                self.ent_lim[LVL_QOS][q * N_LIM + m] = limits[q, m]
        self._limits_changed()

    def _limits_changed(self):
        cdef int lvl, e, m
        self.limits_on = 0
        self.queued_limits_on = 0
        for lvl in range(N_LVL):
            for e in range(self.n_ent[lvl]):
                for m in range(N_LIM):
                    if self.ent_lim[lvl][e * N_LIM + m] > 0:
                        self.limits_on = 1
                        if m == LIM_QUEUED:
                            self.queued_limits_on = 1
            for m in range(N_LIM):
                if lvl < LVL_QOS and self.def_lim[lvl][m] > 0:
                    self.limits_on = 1
                    if m == LIM_QUEUED:
                        self.queued_limits_on = 1
        self.need_full_pass = 1

    def set_priority(self, double w_age, double w_size, double w_fairshare, double w_qos,
                     int64_t max_age_s, bint favor_small, int64_t interval_s):
        """Multifactor weights; recomputed every ``interval_s`` (ORDER_MULTIFACTOR)."""
        if max_age_s < 1 or interval_s < 1:
            raise ValueError("max_age_s and interval_s must be >= 1")
        self.w_age = w_age
        self.w_size = w_size
        self.w_fs = w_fairshare
        self.w_qos = w_qos
        self.max_age_s = max_age_s
        self.favor_small = favor_small
        self.prio_interval_s = interval_s
        self.next_prio_s = -NEVER
        self.need_full_pass = 1

    def set_fairshare(self, int algorithm, double half_life_s,
                      const double[::1] user_share, const double[::1] group_share):
        """Fairshare algorithm, usage half-life (0: no decay) and raw shares."""
        cdef int k
        if algorithm not in (FS_CLASSIC, FS_FAIR_TREE):
            raise ValueError(f"unknown fairshare algorithm {algorithm}")
        if half_life_s < 0:
            raise ValueError("half_life_s must be >= 0")
        if (self._grow_ent(LVL_USER, <int>user_share.shape[0]) != 0
                or self._grow_ent(LVL_GROUP, <int>group_share.shape[0]) != 0):
            raise MemoryError()
        for k in range(user_share.shape[0]):
            if not user_share[k] > 0:
                raise ValueError(f"user {k}: shares must be > 0")
            self.user_share[k] = user_share[k]
        for k in range(group_share.shape[0]):
            if not group_share[k] > 0:
                raise ValueError(f"group {k}: shares must be > 0")
            self.group_share[k] = group_share[k]
        self.fs_algo = algorithm
        self.fs_half_life_s = half_life_s
        self.next_prio_s = -NEVER

    def set_nice(self, const double[::1] user_nice):
        """Per-user nice values, subtracted from the multifactor priority."""
        cdef int k
        if self._grow_ent(LVL_USER, <int>user_nice.shape[0]) != 0:
            raise MemoryError()
        for k in range(user_nice.shape[0]):
            self.user_nice[k] = user_nice[k]
        self.next_prio_s = -NEVER

    def set_starvation_limit(self, int64_t limit_s):
        """A job pending longer than ``limit_s`` goes to the front and gets a
        reservation, whatever the backfill mode (0: off)."""
        if limit_s < 0:
            raise ValueError("the starvation limit must be >= 0")
        self.starve_limit_s = limit_s
        self.need_full_pass = 1

    def set_priority_phase(self, int64_t phase_s):
        """Recompute on a fixed clock: at the first pass at or after each
        ``phase_s + k * interval_s`` (k = 0, 1, ...), not ``interval_s`` after
        the last recomputation. Slurm's priority thread runs every
        PriorityCalcPeriod counted from slurmctld's start, whatever the jobs
        do; ``phase_s`` is that start's offset on the replay's clock, modulo
        the interval. -1: off (the default). The first pass with a pending job
        still recomputes (Slurm gives a job its priority when it is submitted).
        Set after ``set_priority``."""
        if phase_s < -1 or phase_s >= self.prio_interval_s:
            raise ValueError("phase_s must be -1 or in [0, interval_s)")
        self.prio_phase_s = phase_s
        self.next_prio_s = -NEVER

    def recompute_priorities(self, int64_t now):
        """Bring usage and fairshare up to ``now`` and recompute every pending job's
        priority now (a pass does it by itself every interval)."""
        if _mf_recompute(self, now) != 0:
            raise MemoryError()

    def priority_factors(self, int j, int64_t now):
        """(priority, {factor: normalized value}) of job ``j`` at ``now``, as sprio.

        Fairshare is the factor of the last recomputation (usage is not
        brought up to ``now``), as a real scheduler shows it between runs.
        """
        self._check_idx(j)
        cdef double f[5]
        cdef double p = _mf_priority(self, j, now, f)
        return p, {FACTOR_NAMES[k]: f[k] for k in range(N_FACTORS)}

    def weights(self):
        return {"age": self.w_age, "size": self.w_size, "fairshare": self.w_fs,
                "qos": self.w_qos, "nice": -1.0}

    def usage(self, int level):
        """Running jobs, cores, GPUs held per entity of a level, shape (n, 3) (a copy)."""
        if level < 0 or level >= N_LVL:
            raise ValueError("level must be 0 (user), 1 (group) or 2 (qos)")
        out = np.zeros((self.n_ent[level], N_USE), dtype=np.int64)
        cdef int64_t[:, ::1] v = out
        if self.n_ent[level]:
            memcpy(&v[0, 0], self.ent_use[level], self.n_ent[level] * N_USE * sizeof(int64_t))
        return out

    def fairshare_usage(self):
        """(decayed core-seconds per user as of the last recomputation, factor per user)."""
        cdef int u, n = self.n_ent[LVL_USER]
        used = np.empty(n, dtype=np.float64)
        factor = np.empty(n, dtype=np.float64)
        for u in range(n):
            used[u] = self.user_usage[u]
            factor[u] = self.user_fs[u]
        return used, factor

    def add_dependencies(self, const int32_t[::1] child, const int32_t[::1] parent,
                         const int32_t[::1] kind, const int64_t[::1] delay_s):
        """Child waits for parent (DEP_*), then ``delay_s`` of think time.

        The child must not be submitted yet. Checks of cycles and of unknown
        jobs are the caller's (``htcsim.kernel``).
        """
        cdef Py_ssize_t k, m = child.shape[0]
        cdef int c, p
        if parent.shape[0] != m or kind.shape[0] != m or delay_s.shape[0] != m:
            raise ValueError("child, parent, kind and delay_s must have the same length")
        for k in range(m):
            c = child[k]
            p = parent[k]
            self._check_idx(c)
            self._check_idx(p)
            if self.job_state[c] != JS_NEW:
                raise ValueError(f"job slot {c} is already submitted: too late for a dependency")
            if kind[k] not in (DEP_AFTERANY, DEP_AFTEROK, DEP_AFTERNOTOK):
                raise ValueError(f"unknown dependency kind {kind[k]}")
            if delay_s[k] < 0:
                raise ValueError("think time must be >= 0")
            if p == c:
                raise ValueError(f"job slot {c} depends on itself")
            if _reserve(<void**>&self.edges, &self.cap_edges, self.n_edges + 1,
                        sizeof(DepEdge)) != 0:
                raise MemoryError()
            self.edges[self.n_edges].child = c
            self.edges[self.n_edges].kind = kind[k]
            self.edges[self.n_edges].delay_s = delay_s[k]
            self.edges[self.n_edges].next = self.kid_head[p]
            self.edges[self.n_edges]._pad = 0
            self.kid_head[p] = self.n_edges
            self.n_edges += 1
            self.dep_unmet[c] += 1
            if self.job_state[p] == JS_ENDED or self.job_state[p] == JS_CANCELLED:
                # the parent is done already: settle this edge now
                _settle_edge(self, self.n_edges - 1, p, self.end_s[p])

    def hold(self, int j):
        """Hold a pending job (reason Held) until ``release``; it leaves the queue."""
        self._check_idx(j)
        cdef int pos
        if self.job_state[j] != JS_PENDING:
            raise ValueError(f"job slot {j} is not pending: only a pending job can be held")
        pos = self._find_pos(j)
        self._tombstone(pos)
        self.need_full_pass = 1
        self.starved[j] = 0
        self.job_state[j] = JS_HELD
        self.hold_why[j] = WHY_HELD

    def release(self, int j, int64_t now):
        """Release a held job: it goes (back) to the pending queue."""
        self._check_idx(j)
        if self.job_state[j] != JS_HELD or self.hold_why[j] != WHY_HELD:
            raise ValueError(f"job slot {j} is not held")
        self.job_state[j] = JS_NEW
        if self._arrive(j, now) != 0:
            raise MemoryError()

    def add_reservation(self, int64_t start_s, int64_t end_s, const int8_t[::1] on_node,
                        int owner_kind, int owner_idx):
        """Reserve the flagged nodes over [start_s, end_s) for a user, group or QoS.

        Jobs of the owner may run there within the window; other jobs may use
        those nodes only if they end (by their requested time) before it starts.
        """
        cdef int n, r
        cdef AdvanceResv* R
        if end_s <= start_s:
            raise ValueError("a reservation must end after it starts")
        if on_node.shape[0] != self.n_nodes:
            raise ValueError(f"on_node needs one flag per node ({self.n_nodes})")
        if owner_kind not in (OWNER_USER, OWNER_GROUP, OWNER_QOS):
            raise ValueError(f"unknown owner kind {owner_kind}")
        if _reserve(<void**>&self.resv, &self.cap_resv, self.n_resv + 1, sizeof(AdvanceResv)) != 0:
            raise MemoryError()
        R = &self.resv[self.n_resv]
        R.start_s = start_s
        R.end_s = end_s
        R.owner_kind = owner_kind
        R.owner_idx = owner_idx
        R.on_node = <int8_t*>malloc(max(self.n_nodes, 1))
        if R.on_node == NULL:
            raise MemoryError()
        for r in range(N_RES):
            R.cap[r] = 0
        for n in range(self.n_nodes):
            R.on_node[n] = 1 if on_node[n] else 0
            if on_node[n]:
                for r in range(N_RES):
                    R.cap[r] += self.node_cap[n * N_RES + r]
        self.n_resv += 1
        self.n_live_resv += 1
        self.need_full_pass = 1
        return self.n_resv - 1

    @property
    def n_nodes(self):
        return self.n_nodes

    @property
    def n_jobs(self):
        return self.n_jobs

    @property
    def n_pending(self):
        return self.n_pending

    @property
    def n_running(self):
        return self.n_run

    @property
    def n_started(self):
        return self.n_started

    # ------------------------------------------------------------ jobs

    def add_jobs(self, const JobSpec[::1] specs):
        """Register jobs (state NEW); returns the slot index of the first one.

        Validation is the caller's (``htcsim.kernel``): n_tasks >= 1,
        walltime_s >= 0, per_task >= 0 with at least one core per task.
        """
        cdef Py_ssize_t k, m = specs.shape[0]
        cdef int first = self.n_jobs, j, r, simple
        if self._grow_jobs(self.n_jobs + m) != 0:
            raise MemoryError()
        for k in range(m):
            j = first + <int>k
            self.jobs[j] = specs[k]
            simple = 1 if specs[k].per_task[RES_CORES] == 1 else 0
            for r in range(N_RES):
                self.need[j * N_RES + r] = specs[k].per_task[r] * specs[k].n_tasks
                if r != RES_CORES and specs[k].per_task[r] != 0:
                    simple = 0
            self.simple[j] = <int8_t>simple
            self.job_state[j] = JS_NEW
            self.start_s[j] = -1
            self.end_s[j] = -1
            self.reserved_s[j] = -1
            self.alloc_off[j] = 0
            self.alloc_cnt[j] = 0
            self.starved[j] = 0
            self.dep_unmet[j] = 0
            self.dep_ready[j] = -NEVER
            self.dep_doomed[j] = 0
            self.dep_cancelled[j] = 0
            self.hold_why[j] = WHY_NONE
            self.end_ok[j] = 0
            self.elig_s[j] = -1
            self.kid_head[j] = -1
            self.requeues[j] = 0
            self.lost_s[j] = 0
            self.ckpt_s[j] = 0
            self.done_s[j] = 0
            self.node_failed[j] = 0
        self.n_jobs = first + <int>m
        for k in range(m):
            if (self._grow_ent(LVL_USER, specs[k].user_idx + 1) != 0
                    or self._grow_ent(LVL_GROUP, specs[k].group_idx + 1) != 0
                    or self._grow_ent(LVL_QOS, specs[k].qos_idx + 1) != 0):
                raise MemoryError()
            if specs[k].user_idx >= 0 and self.user_group[specs[k].user_idx] < 0:
                self.user_group[specs[k].user_idx] = specs[k].group_idx
        return first

    cdef int _grow_ent(self, int lvl, int n) noexcept nogil:
        """At least ``n`` users, groups or QoS; new ones get the default limits."""
        cdef int e, m, old = self.n_ent[lvl]
        cdef void* p
        if n <= old:
            return 0
        p = realloc(self.ent_use[lvl], n * N_USE * sizeof(int64_t))
        if p == NULL: return -1
        self.ent_use[lvl] = <int64_t*>p
        p = realloc(self.ent_lim[lvl], n * N_LIM * sizeof(int64_t))
        if p == NULL: return -1
        self.ent_lim[lvl] = <int64_t*>p
        p = realloc(self.ent_seen[lvl], n * sizeof(int32_t))
        if p == NULL: return -1
        self.ent_seen[lvl] = <int32_t*>p
        for e in range(old, n):
            for m in range(N_USE):
                self.ent_use[lvl][e * N_USE + m] = 0
            for m in range(N_LIM):
                self.ent_lim[lvl][e * N_LIM + m] = self.def_lim[lvl][m] if lvl != LVL_QOS else 0
            self.ent_seen[lvl][e] = 0
        if lvl == LVL_USER:
            if (_grow_f64(&self.user_nice, n) or _grow_f64(&self.user_share, n)
                    or _grow_f64(&self.user_usage, n) or _grow_f64(&self.user_acc, n)
                    or _grow_f64(&self.user_fs, n)):
                return -1
            p = realloc(self.user_group, n * sizeof(int32_t))
            if p == NULL: return -1
            self.user_group = <int32_t*>p
            for e in range(old, n):
                self.user_nice[e] = 0.0
                self.user_share[e] = 1.0
                self.user_usage[e] = 0.0
                self.user_acc[e] = 0.0
                self.user_fs[e] = 1.0
                self.user_group[e] = -1
        elif lvl == LVL_GROUP:
            if _grow_f64(&self.group_share, n) or _grow_f64(&self.group_usage, n):
                return -1
            for e in range(old, n):
                self.group_share[e] = 1.0
                self.group_usage[e] = 0.0
        else:
            if _grow_f64(&self.qos_prio, n):
                return -1
            for e in range(old, n):
                self.qos_prio[e] = 0.0
        self.n_ent[lvl] = n
        return 0

    cdef int _grow_jobs(self, Py_ssize_t need) noexcept nogil:
        cdef int cap
        if need <= self.cap_jobs:
            return 0
        cap = self.cap_jobs
        if _reserve(<void**>&self.jobs, &cap, need, sizeof(JobSpec)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.need, &cap, need, N_RES * sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.simple, &cap, need, sizeof(int8_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.job_state, &cap, need, sizeof(int8_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.start_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.end_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.reserved_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.alloc_off, &cap, need, sizeof(int32_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.alloc_cnt, &cap, need, sizeof(int32_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.starved, &cap, need, sizeof(int8_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.dep_unmet, &cap, need, sizeof(int32_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.dep_ready, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.dep_doomed, &cap, need, sizeof(int8_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.dep_cancelled, &cap, need, sizeof(int8_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.hold_why, &cap, need, sizeof(int8_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.end_ok, &cap, need, sizeof(int8_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.elig_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.kid_head, &cap, need, sizeof(int32_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.run_pos, &cap, need, sizeof(int32_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.requeues, &cap, need, sizeof(int32_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.lost_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.ckpt_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.done_s, &cap, need, sizeof(int64_t)) != 0: return -1
        cap = self.cap_jobs
        if _reserve(<void**>&self.node_failed, &cap, need, sizeof(int8_t)) != 0: return -1
        self.cap_jobs = cap
        return 0

    def set_priorities(self, const int32_t[::1] job_idx, const double[::1] priority):
        """Set the ORDER_PRIORITY key of jobs; the queue is re-sorted once."""
        cdef Py_ssize_t k
        if job_idx.shape[0] != priority.shape[0]:
            raise ValueError("job_idx and priority must have the same length")
        for k in range(job_idx.shape[0]):
            self._check_idx(job_idx[k])
            self.jobs[job_idx[k]].priority = priority[k]
        if self.order == ORDER_PRIORITY:
            self._rekey_queue()
            self.need_full_pass = 1

    cdef void _check_idx(self, int j) except *:
        if j < 0 or j >= self.n_jobs:
            raise IndexError(f"job slot {j} out of range (0..{self.n_jobs - 1})")

    cdef void _entry_of(self, int j, QEntry* e) noexcept nogil:
        cdef JobSpec* s = &self.jobs[j]
        if self.starved[j]:
            e.key = -DBL_MAX  # the starvation guard: before every other job
        elif self.order == ORDER_FCFS:
            e.key = 0.0
        elif self.order == ORDER_SJF:
            e.key = <double>s.walltime_s
        else:
            e.key = -s.priority
        e.submit_s = s.submit_s
        e.job_id = s.job_id
        e.job_idx = j
        e._pad = 0

    # ------------------------------------------------------------ events

    cpdef int submit(self, int j, int64_t now) except -1:
        """A job arrives: pending, or held while a dependency or its think time is unmet."""
        self._check_idx(j)
        if self.job_state[j] != JS_NEW:
            raise ValueError(f"job slot {j} was already submitted")
        if self._arrive(j, now) != 0:
            raise MemoryError()
        return 0

    cdef int _arrive(self, int j, int64_t now) noexcept nogil:
        if self.dep_doomed[j]:
            # a parent already ended in a way its dependency excludes
            self.job_state[j] = JS_CANCELLED
            self.dep_cancelled[j] = 1
            self.end_s[j] = now
            self.end_ok[j] = 0
            return self._parent_done(j, now)
        if self.dep_unmet[j] > 0:
            self.job_state[j] = JS_HELD
            self.hold_why[j] = WHY_DEPENDENCY
            return 0
        if self.dep_ready[j] > now:
            self.job_state[j] = JS_HELD
            self.hold_why[j] = WHY_BEGIN_TIME
            return heap_push(&self.begin_heap, self.dep_ready[j], j)
        return self._submit(j, now)

    cdef int _submit(self, int j, int64_t now) noexcept nogil:
        """Job ``j`` becomes eligible at ``now``: into the pending queue."""
        cdef QEntry e
        cdef double f[5]
        self.elig_s[j] = now
        self.hold_why[j] = WHY_NONE
        if self.order == ORDER_MULTIFACTOR:
            self.jobs[j].priority = _mf_priority(self, j, now, f)
        if self.starve_limit_s > 0:
            if fifo_push(&self.starve_fifo, j, now) != 0:
                return -1
        if self.as_on and fifo_push(&self.as_fifo, j, now) != 0:
            return -1
        if self._queue_insert(j) != 0:
            return -1
        self._entry_of(j, &e)
        if _reserve(<void**>&self.fresh, &self.cap_fresh, self.n_fresh + 1, sizeof(QEntry)) != 0:
            return -1
        self.fresh[self.n_fresh] = e
        self.n_fresh += 1
        return 0

    cdef int _queue_insert(self, int j) noexcept nogil:
        """Put pending job ``j`` at its place in the queue."""
        cdef QEntry e
        cdef int pos
        self._entry_of(j, &e)
        if self.q_end == self.q_cap:
            self._compact_queue()
            if self.q_end == self.q_cap:
                if _reserve(<void**>&self.q, &self.q_cap, self.q_end + 1, sizeof(QEntry)) != 0:
                    return -1
        pos = self._upper_bound(&e)
        if pos < self.q_end:
            memmove(&self.q[pos + 1], &self.q[pos], (self.q_end - pos) * sizeof(QEntry))
        self.q[pos] = e
        self.q_end += 1
        self.n_pending += 1
        self.job_state[j] = JS_PENDING
        # Does an older queued job see this arrival? Then incremental passes are off.
        if self.backfill == BF_CONSERVATIVE:
            if pos != self.q_end - 1:
                self.need_full_pass = 1
        elif self.head_idx < 0 or _qcmp(&e, &self.head_entry) < 0:
            self.need_full_pass = 1
        return 0

    def adopt(self, int j, int64_t start_s, const int32_t[::1] nodes, const int32_t[::1] tasks):
        """A job found running when a driver restarts (a live agent re-adopting
        its processes): it holds ``tasks[k]`` tasks on node ``nodes[k]`` since
        ``start_s``, as if a pass had started it then. The job must be new
        (added, never submitted) and its tasks must fit on those UP nodes."""
        self._check_idx(j)
        cdef Py_ssize_t k, m = nodes.shape[0]
        cdef int n, r, off
        cdef int64_t placed = 0
        cdef JobSpec* s = &self.jobs[j]
        if self.job_state[j] != JS_NEW:
            raise ValueError(f"job slot {j} was already submitted: only a new job is adopted")
        if tasks.shape[0] != m or m == 0:
            raise ValueError("adopt needs one task count per node, and at least one node")
        for k in range(m):
            n = nodes[k]
            if n < 0 or n >= self.n_nodes:
                raise ValueError(f"job slot {j}: node {n} out of range")
            if self.node_state[n] != NODE_UP:
                raise ValueError(f"job slot {j}: node {n} is not up")
            if tasks[k] < 1:
                raise ValueError(f"job slot {j}: a task count must be >= 1")
            for r in range(N_RES):
                if self.node_free[n * N_RES + r] < tasks[k] * s.per_task[r]:
                    raise ValueError(f"job slot {j} does not fit on node {n}")
            placed += tasks[k]
        if placed != s.n_tasks:
            raise ValueError(f"job slot {j} has {s.n_tasks} tasks, {placed} placed")
        off = self.n_alloc
        for k in range(m):
            if self._take_on_node(s, nodes[k], tasks[k]) != 0:
                raise MemoryError()
        if self._commit_start(j, start_s, off, 0) != 0:
            raise MemoryError()
        self.need_full_pass = 1

    cpdef int finish(self, int j, int64_t now, int ok=1) except -1:
        """A running job ended: release its resources. ``ok`` 0: it failed (for
        afterok/afternotok dependents)."""
        self._check_idx(j)
        if self.job_state[j] != JS_RUNNING:
            raise ValueError(f"job slot {j} is not running")
        self._release(j, now)
        self.job_state[j] = JS_ENDED
        self.end_s[j] = now
        self.end_ok[j] = 1 if ok else 0
        if self.kid_head[j] >= 0:
            if self._parent_done(j, now) != 0:
                raise MemoryError()
        return 0

    cpdef int cancel(self, int j, int64_t now) except -1:
        """Cancel a job in any state but ended. Returns the state it was in."""
        self._check_idx(j)
        cdef int was = self.job_state[j]
        cdef int pos
        if was == JS_RUNNING:
            self._release(j, now)
        elif was == JS_PENDING:
            pos = self._find_pos(j)
            self._tombstone(pos)
            if self.backfill == BF_CONSERVATIVE or j == self.head_idx:
                self.need_full_pass = 1
        elif was == JS_NEW or was == JS_HELD:
            pass
        else:
            raise ValueError(f"job slot {j} has already ended")
        self.job_state[j] = JS_CANCELLED
        self.end_s[j] = now
        self.end_ok[j] = 0
        if self.kid_head[j] >= 0:
            if self._parent_done(j, now) != 0:
                raise MemoryError()
        return was

    cdef int _parent_done(self, int p, int64_t now) noexcept nogil:
        """Job ``p`` ended or was cancelled: settle its dependents' edges,
        cancelling (transitively) those whose dependency can never be met."""
        cdef int32_t* stack = NULL
        cdef int n = 0, cap = 0, e, x, c, rc = 0
        if _reserve(<void**>&stack, &cap, 1, sizeof(int32_t)) != 0:
            return -1
        stack[n] = p
        n += 1
        while n > 0:
            n -= 1
            x = stack[n]
            e = self.kid_head[x]
            while e >= 0:
                c = _settle_edge(self, e, x, now)
                if c == -2:
                    rc = -1
                elif c >= 0:  # cancelled: its own dependents settle in turn
                    if _reserve(<void**>&stack, &cap, n + 1, sizeof(int32_t)) != 0:
                        free(stack)
                        return -1
                    stack[n] = c
                    n += 1
                e = self.edges[e].next
        free(stack)
        return rc

    cdef int _release_begin(self, int64_t now) noexcept nogil:
        """Held jobs whose think time is over enter the queue."""
        cdef int j
        while self.begin_heap.n > 0 and self.begin_heap.t[0] <= now:
            j = heap_pop(&self.begin_heap)
            if self.job_state[j] == JS_HELD and self.hold_why[j] == WHY_BEGIN_TIME:
                if self._submit(j, now) != 0:
                    return -1
        return 0

    cdef int _promote_starved(self, int64_t now) noexcept nogil:
        """Jobs eligible for longer than the limit move to the front of the queue."""
        cdef int j, pos
        cdef JobFifo* F = &self.starve_fifo
        _fifo_trim(self, F)
        while F.head < F.n:
            j = F.j[F.head]
            if _fifo_stale(self, F, F.head) or self.starved[j]:
                F.head += 1
                continue
            if now - self.elig_s[j] <= self.starve_limit_s:
                break
            pos = self._find_pos(j)
            self._tombstone(pos)
            self.starved[j] = 1
            if self._queue_insert(j) != 0:
                return -1
            self.need_full_pass = 1
            F.head += 1
        return 0

    cdef inline int _may_use(self, int n, int j) noexcept nogil:
        """May job ``j`` put tasks on node ``n`` now: up, in its partition, not
        kept from it by an advance reservation."""
        if self.node_state[n] != NODE_UP:
            return 0
        if self.n_part > 1 and self.node_part[n] != self.jobs[j].part_idx:
            return 0
        return not self.n_live_resv or self._node_usable(n, j)

    cdef int _owner_resv(self, int j) noexcept nogil:
        """The advance reservation whose window job ``j`` may use now, or -1."""
        cdef int k, owner
        cdef AdvanceResv* R
        for k in range(self.n_resv):
            R = &self.resv[k]
            if (R.start_s > self.cur_now or R.end_s <= self.cur_now
                    or self.cur_now + self.jobs[j].walltime_s > R.end_s):
                continue  # (a 0 s job at the window's end is no longer in it)
            if R.owner_kind == OWNER_USER:
                owner = self.jobs[j].user_idx
            elif R.owner_kind == OWNER_GROUP:
                owner = self.jobs[j].group_idx
            else:
                owner = self.jobs[j].qos_idx
            if owner >= 0 and owner == R.owner_idx:
                return k
        return -1

    cdef int _node_usable(self, int n, int j) noexcept nogil:
        """Advance reservations: may job ``j`` put tasks on node ``n`` now?

        A job inside its own reservation's window runs on that reservation's
        nodes only; any other job may use a reserved node only if it ends (by
        its requested time) before the reservation starts.
        """
        cdef int k, mine = self._owner_resv(j)
        cdef AdvanceResv* R
        if mine >= 0:
            return self.resv[mine].on_node[n]
        for k in range(self.n_resv):
            R = &self.resv[k]
            if R.end_s > self.cur_now and R.on_node[n] and self.cur_now + self.jobs[j].walltime_s > R.start_s:
                return 0
        return 1

    cdef void _expire_resv(self, int64_t now) noexcept nogil:
        cdef int k, live = 0
        for k in range(self.n_resv):
            if self.resv[k].end_s > now:
                live += 1
        if live != self.n_live_resv:
            self.need_full_pass = 1
        self.n_live_resv = live

    def fail_node(self, int node, int64_t now):
        """Node ``node`` fails at ``now``: it goes DOWN and every job with a task
        on it loses its run since its last checkpoint. Under FAIL_REQUEUE (and
        retries left) the job is requeued -- resources released on all its
        nodes, back in the pending queue at its place, eligible now, its
        requested time less the checkpointed work; otherwise it ends, failed.
        An OFF node cannot fail. Returns the slots hit."""
        if node < 0 or node >= self.n_nodes:
            raise IndexError(f"node {node} out of range")
        cdef int k = self._fail_node(node, now)
        if k < 0:
            raise MemoryError()
        hit = np.empty(k, dtype=np.int32)
        for i in range(k):
            hit[i] = self.fail_hits[i]
        return hit

    cdef int _fail_node(self, int node, int64_t now) noexcept nogil:
        """fail_node in C: the jobs hit go to fail_hits; their count, or -1."""
        cdef int i, a, j, k = 0
        if self.node_state[node] == NODE_OFF:
            return 0
        if self._run_sorted() != 0:
            return -1
        for i in range(self.n_run):
            j = self.run[i].job_idx
            for a in range(self.alloc_off[j], self.alloc_off[j] + self.alloc_cnt[j]):
                if self.alloc[a].node_idx == node:
                    if _reserve(<void**>&self.fail_hits, &self.cap_fail_hits, k + 1,
                                sizeof(int32_t)) != 0:
                        return -1
                    self.fail_hits[k] = j
                    k += 1
                    break
        _node_to(self, node, NODE_DOWN, now)  # (before the releases: it must not go OFF or idle)
        for i in range(k):
            if self._fail_job(self.fail_hits[i], now) != 0:
                return -1
        return k

    cdef int _fail_job(self, int j, int64_t now) noexcept nogil:
        """Running job ``j`` lost its node at ``now``: requeue it from its last
        checkpoint, or end it failed (out of retries, or FAIL_END)."""
        cdef int64_t run = now - self.start_s[j]
        cdef int64_t saved = 0
        self._release(j, now)
        if self.fail_mode == FAIL_END or (0 <= self.max_retries <= self.requeues[j]):
            self.lost_s[j] += run
            self.job_state[j] = JS_ENDED
            self.end_s[j] = now
            self.end_ok[j] = 0
            self.node_failed[j] = 1
            if self.kid_head[j] >= 0:
                return self._parent_done(j, now)
            return 0
        if self.ckpt_s[j] > 0:
            saved = (run // self.ckpt_s[j]) * self.ckpt_s[j]
        self.lost_s[j] += run - saved
        self.done_s[j] += saved
        self.jobs[j].walltime_s = max(self.jobs[j].walltime_s - saved, 0)
        self.requeues[j] += 1
        self.start_s[j] = -1
        return self._submit(j, now)

    def requeue_counts(self):
        """(times requeued, run seconds lost) per slot (copies)."""
        counts = np.empty(self.n_jobs, dtype=np.int32)
        lost = np.empty(self.n_jobs, dtype=np.int64)
        cdef int32_t[::1] vc = counts
        cdef int64_t[::1] vl = lost
        if self.n_jobs:
            memcpy(&vc[0], self.requeues, self.n_jobs * sizeof(int32_t))
            memcpy(&vl[0], self.lost_s, self.n_jobs * sizeof(int64_t))
        return counts, lost

    def checkpoint_state(self):
        """(run seconds saved by checkpoints, ended by a node failure) per slot (copies)."""
        saved = np.empty(self.n_jobs, dtype=np.int64)
        failed = np.empty(self.n_jobs, dtype=np.int8)
        cdef int64_t[::1] vs = saved
        cdef int8_t[::1] vf = failed
        if self.n_jobs:
            memcpy(&vs[0], self.done_s, self.n_jobs * sizeof(int64_t))
            memcpy(&vf[0], self.node_failed, self.n_jobs * sizeof(int8_t))
        return saved, failed

    def configure_failures(self, int mode, int max_retries):
        """What a node failure does to its jobs: FAIL_REQUEUE (at most
        ``max_retries`` times per job, -1 no limit) or FAIL_END."""
        if mode not in (FAIL_REQUEUE, FAIL_END):
            raise ValueError(f"unknown failure mode {mode}")
        if max_retries < -1:
            raise ValueError("max_retries must be >= 0, or -1 for no limit")
        self.fail_mode = mode
        self.max_retries = max_retries

    def set_checkpoints(self, const int32_t[::1] job_idx, const int64_t[::1] interval_s):
        """Jobs that checkpoint every ``interval_s`` seconds of run (0: never)."""
        cdef Py_ssize_t k
        if job_idx.shape[0] != interval_s.shape[0]:
            raise ValueError("one interval per job")
        for k in range(job_idx.shape[0]):
            self._check_idx(job_idx[k])
            if interval_s[k] < 0:
                raise ValueError(f"job slot {job_idx[k]}: checkpoint interval must be >= 0")
            self.ckpt_s[job_idx[k]] = interval_s[k]

    def set_node_state(self, int node, int state, int64_t now=-1):
        """Change a node's state (at ``now``; default: the last pass's time);
        only UP nodes take new work or count as free. Use drain_node to drain."""
        if node < 0 or node >= self.n_nodes:
            raise IndexError(f"node {node} out of range")
        if state not in (NODE_UP, NODE_BOOTING, NODE_DRAINING, NODE_DOWN, NODE_OFF):
            raise ValueError(f"unknown node state {state}")
        if state == NODE_OFF and self.node_tasks[node] > 0:
            raise ValueError(f"node {node} has running tasks: drain it instead")
        if now < 0:
            now = self.last_pass_now
        if state == NODE_DRAINING:
            _drain(self, node, now)
        else:
            _node_to(self, node, state, now)

    def drain_node(self, int node, int64_t now):
        """Drain node ``node``: it takes no new task and goes OFF when its last
        task ends (at once if it has none). Returns its new state."""
        if node < 0 or node >= self.n_nodes:
            raise IndexError(f"node {node} out of range")
        _drain(self, node, now)
        return self.node_state[node]

    cdef void _free_types(self):
        free(self.type_first); free(self.type_end); free(self.type_cap); free(self.type_price)
        free(self.type_prov); free(self.type_booting); free(self.as_scaled); free(self.as_min)
        free(self.as_max); free(self.as_last_s); free(self.as_demand); free(self.as_room)
        free(self.as_full)

    cdef void _alloc_types(self, int n_types) except *:
        self._free_types()
        cdef int m = max(n_types, 1)
        self.n_types = n_types
        self.type_first = <int32_t*>calloc(m, sizeof(int32_t))
        self.type_end = <int32_t*>calloc(m, sizeof(int32_t))
        self.type_cap = <int64_t*>calloc(m * N_RES, sizeof(int64_t))
        self.type_price = <double*>calloc(m, sizeof(double))
        self.type_prov = <int32_t*>calloc(m, sizeof(int32_t))
        self.type_booting = <int32_t*>calloc(m, sizeof(int32_t))
        self.as_scaled = <int8_t*>calloc(m, sizeof(int8_t))
        self.as_min = <int32_t*>calloc(m, sizeof(int32_t))
        self.as_max = <int32_t*>calloc(m, sizeof(int32_t))
        self.as_last_s = <int64_t*>calloc(m, sizeof(int64_t))
        self.as_demand = <int64_t*>calloc(m * N_RES, sizeof(int64_t))
        self.as_room = <int32_t*>calloc(m, sizeof(int32_t))
        self.as_full = <int8_t*>calloc(m, sizeof(int8_t))
        if (self.type_first == NULL or self.type_end == NULL or self.type_cap == NULL
                or self.type_price == NULL or self.type_prov == NULL or self.type_booting == NULL
                or self.as_scaled == NULL or self.as_min == NULL or self.as_max == NULL
                or self.as_last_s == NULL or self.as_demand == NULL or self.as_room == NULL
                or self.as_full == NULL):
            raise MemoryError()

    def set_node_types(self, const int32_t[::1] node_type, const double[::1] price_per_hour):
        """Node types: node_type[n] is node n's type (types are contiguous runs of
        nodes, in type order, of identical capacity); price_per_hour per type."""
        cdef int n, t, r, n_types = <int>price_per_hour.shape[0]
        if node_type.shape[0] != self.n_nodes:
            raise ValueError(f"node_type needs one entry per node ({self.n_nodes})")
        if n_types < 1:
            raise ValueError("at least one node type")
        for n in range(self.n_nodes):
            if not 0 <= node_type[n] < n_types:
                raise ValueError(f"node {n}: type {node_type[n]} out of range")
            if n > 0 and node_type[n] < node_type[n - 1]:
                raise ValueError("the nodes of a type must be contiguous, types in order")
        if self.n_run or self.n_pending or self.as_on:
            raise ValueError("node types are set before any job is submitted or autoscaling")
        for t in range(n_types):
            if price_per_hour[t] < 0:
                raise ValueError(f"node type {t}: price must be >= 0")
        self._alloc_types(n_types)
        for t in range(n_types):
            self.type_price[t] = price_per_hour[t]
            self.type_first[t] = self.n_nodes
        self.on_rate = 0.0
        for n in range(self.n_nodes):
            t = node_type[n]
            self.node_type[n] = t
            if self.type_first[t] > n:
                self.type_first[t] = n
                for r in range(N_RES):
                    self.type_cap[t * N_RES + r] = self.node_cap[n * N_RES + r]
            self.type_end[t] = n + 1
            for r in range(N_RES):
                if self.node_cap[n * N_RES + r] != self.type_cap[t * N_RES + r]:
                    raise ValueError(f"node {n}: capacity differs from the other nodes of type {t}")
            if self.node_state[n] != NODE_OFF:
                self.type_prov[t] += 1
                self.on_rate += self.type_price[t]
            if self.node_state[n] == NODE_BOOTING:
                self.type_booting[t] += 1
        for t in range(n_types):
            if self.type_first[t] == self.n_nodes:
                self.type_first[t] = self.type_end[t] = 0

    def configure_autoscale(self, const int8_t[::1] scaled, const int32_t[::1] min_nodes,
                            const int32_t[::1] max_nodes, int64_t wait_s, int64_t idle_s,
                            int64_t boot_s, int64_t cooldown_s, int step, int64_t now=0,
                            int64_t interval_s=0, bint live=False):
        """Let the autoscaler manage the node types with ``scaled`` set, between
        ``min_nodes`` and ``max_nodes`` (at most the type's node count). The
        nodes of a managed type beyond its min go OFF now. Call it before any
        job is submitted (the demand is tracked from submission on). ``live``:
        a booted node stays BOOTING until set UP (a live agent's node joins),
        whatever the boot delay."""
        cdef int t, n, count
        if scaled.shape[0] != self.n_types or min_nodes.shape[0] != self.n_types \
                or max_nodes.shape[0] != self.n_types:
            raise ValueError(f"one entry per node type ({self.n_types})")
        if wait_s < 0 or idle_s < 0 or boot_s < 0 or cooldown_s < 0 or interval_s < 0 or step < 1:
            raise ValueError("times must be >= 0 and step >= 1")
        if self.n_run or self.n_pending:
            raise ValueError("autoscaling is configured before any job is submitted")
        for t in range(self.n_types):
            count = self.type_end[t] - self.type_first[t]
            if scaled[t] and not 0 <= min_nodes[t] <= max_nodes[t] <= count:
                raise ValueError(f"node type {t}: need 0 <= min <= max <= {count} nodes")
        self.as_on = 0
        for t in range(self.n_types):
            self.as_scaled[t] = scaled[t]
            self.as_min[t] = min_nodes[t]
            self.as_max[t] = max_nodes[t]
            self.as_last_s[t] = -NEVER
            if scaled[t]:
                self.as_on = 1
                for n in range(self.type_first[t] + min_nodes[t], self.type_end[t]):
                    _node_to(self, n, NODE_OFF, now)
        self.as_wait_s = wait_s
        self.as_idle_s = idle_s
        self.as_boot_s = -1 if live else boot_s
        self.as_cooldown_s = cooldown_s
        self.as_step = step
        self.as_interval_s = interval_s
        self.as_decide_s = -NEVER
        self.as_down_next = -NEVER  # scan at the first decision
        self.as_up_next = NEVER

    def autoscale(self, int64_t now):
        """One autoscaler decision at ``now`` (after a pass): (nodes booted,
        nodes powered off). Booted nodes are BOOTING until complete_boots (the
        simulator) or node_up (a live agent) -- UP at once without a boot delay."""
        self.cur_now = now
        if _autoscale(self, now) != 0:
            raise MemoryError()
        booted = np.empty(self.n_as_booted, dtype=np.int32)
        stopped = np.empty(self.n_as_stopped, dtype=np.int32)
        cdef int k
        for k in range(self.n_as_booted):
            booted[k] = self.as_booted[k]
        for k in range(self.n_as_stopped):
            stopped[k] = self.as_stopped[k]
        return booted, stopped

    def complete_boots(self, int64_t now):
        """Booting nodes whose boot delay has passed by ``now`` come UP."""
        _complete_boots(self, now)

    def start_clock(self, int64_t t0):
        """Provisioned time (cost) counts from ``t0`` for the nodes not OFF; idle
        clocks start there too."""
        cdef int n
        for n in range(self.n_nodes):
            self.on_acc_s[n] = 0
            if self.node_state[n] != NODE_OFF:
                self.on_since[n] = t0
            if self.node_state[n] == NODE_UP and self.node_tasks[n] == 0:
                self.idle_since[n] = t0

    def node_seconds(self, int64_t now):
        """Provisioned seconds of each node up to ``now`` (the cost basis)."""
        out = np.empty(self.n_nodes, dtype=np.int64)
        cdef int64_t[::1] v = out
        cdef int n
        for n in range(self.n_nodes):
            v[n] = self.on_acc_s[n] + (now - self.on_since[n] if self.on_since[n] >= 0 else 0)
        return out

    def node_counts(self):
        """Nodes per lifecycle state: dict idle, allocated, booting, draining, down, off."""
        return {
            "idle": self.n_in_state[NODE_UP] - self.n_busy_up,
            "allocated": self.n_busy_up,
            "booting": self.n_in_state[NODE_BOOTING],
            "draining": self.n_in_state[NODE_DRAINING],
            "down": self.n_in_state[NODE_DOWN],
            "off": self.n_in_state[NODE_OFF],
        }

    def tasks_per_node(self):
        """Tasks placed on each node (a copy)."""
        out = np.empty(self.n_nodes, dtype=np.int32)
        cdef int32_t[::1] v = out
        if self.n_nodes:
            memcpy(&v[0], self.node_tasks, self.n_nodes * sizeof(int32_t))
        return out

    # ------------------------------------------------------------ queue internals

    cdef int _upper_bound(self, const QEntry* e) noexcept nogil:
        """First position in [q_begin, q_end) whose entry sorts after ``e``."""
        cdef int lo = self.q_begin, hi = self.q_end, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if _qcmp(&self.q[mid], e) <= 0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef int _find_pos(self, int j) noexcept nogil:
        """Queue position of pending job ``j`` (binary search, then equal keys)."""
        cdef QEntry e
        cdef int lo = self.q_begin, hi = self.q_end, mid
        self._entry_of(j, &e)
        while lo < hi:
            mid = (lo + hi) >> 1
            if _qcmp(&self.q[mid], &e) < 0:
                lo = mid + 1
            else:
                hi = mid
        while lo < self.q_end and self.q[lo].job_idx != j:
            lo += 1
        return lo

    cdef void _tombstone(self, int pos) noexcept nogil:
        self.q[pos].job_idx = -1
        self.n_tomb += 1
        self.n_pending -= 1
        while self.q_begin < self.q_end and self.q[self.q_begin].job_idx < 0:
            self.q_begin += 1
            self.n_tomb -= 1
        if self.q_begin == self.q_end:
            self.q_begin = 0
            self.q_end = 0
            self.n_tomb = 0

    cdef void _compact_queue(self) noexcept nogil:
        """Drop tombstones and move the live entries to the front (order kept)."""
        cdef int src, dst = 0
        for src in range(self.q_begin, self.q_end):
            if self.q[src].job_idx >= 0:
                if dst != src:
                    self.q[dst] = self.q[src]
                dst += 1
        self.q_begin = 0
        self.q_end = dst
        self.n_tomb = 0

    cdef void _rekey_queue(self) noexcept nogil:
        """Recompute every live entry's key and sort (after an order or priority change)."""
        cdef int p
        self._compact_queue()
        for p in range(self.q_end):
            self._entry_of(self.q[p].job_idx, &self.q[p])
        if _sort_entries(self.q, self.q_end) != 0:
            qsort(self.q, self.q_end, sizeof(QEntry), _qsort_cmp)  # no memory for the buffer
        self.need_full_pass = 1

    # ------------------------------------------------------------ running set

    cdef int _run_insert(self, int j) noexcept nogil:
        """A started job joins the unsorted buffer: O(1), whatever runs already."""
        if _reserve(<void**>&self.run_buf, &self.cap_buf, self.n_buf + 1, sizeof(RunEntry)) != 0:
            return -1
        self.run_buf[self.n_buf].end_req_s = self.start_s[j] + self.jobs[j].walltime_s
        self.run_buf[self.n_buf].job_idx = j
        self.run_buf[self.n_buf]._pad = 0
        self.run_pos[j] = -(self.n_buf + 1)
        self.n_buf += 1
        self.n_run += 1
        return 0

    cdef void _run_remove(self, int j) noexcept nogil:
        """An ended job leaves: a tombstone in the array, or a swap in the buffer."""
        cdef int pos = self.run_pos[j], k, moved
        if pos >= 0:
            self.run[pos].job_idx = -1
        else:
            k = -pos - 1
            self.n_buf -= 1
            if k != self.n_buf:
                self.run_buf[k] = self.run_buf[self.n_buf]
                moved = self.run_buf[k].job_idx
                self.run_pos[moved] = -(k + 1)
        self.n_run -= 1

    cdef int _run_sorted(self) noexcept nogil:
        """Make run[0:n_run] exactly the running jobs sorted by (end_req_s, job_idx):
        sort the buffer, merge it with the array's live entries. 0, or -1."""
        cdef int i = 0, b = 0, k = 0
        cdef RunEntry* out
        if self.n_buf == 0 and self.run_len == self.n_run:
            return 0
        qsort(self.run_buf, self.n_buf, sizeof(RunEntry), _run_cmp)
        out = <RunEntry*>malloc(max(self.n_run, 1) * sizeof(RunEntry))
        if out == NULL:
            return -1
        while i < self.run_len or b < self.n_buf:
            if i < self.run_len and self.run[i].job_idx < 0:
                i += 1
                continue
            if b >= self.n_buf or (i < self.run_len and _run_cmp(&self.run[i], &self.run_buf[b]) < 0):
                out[k] = self.run[i]
                i += 1
            else:
                out[k] = self.run_buf[b]
                b += 1
            self.run_pos[out[k].job_idx] = k
            k += 1
        free(self.run)
        self.run = out
        self.cap_run = max(self.n_run, 1)
        self.run_len = k
        self.n_buf = 0
        return 0

    # ------------------------------------------------------------ placement

    cdef int _fits_now(self, int j) noexcept nogil:
        """Could job ``j`` start on the UP nodes right now?"""
        cdef int n, r
        cdef int64_t k, placeable = 0, per
        cdef JobSpec* s = &self.jobs[j]
        if not _ge(self._free_of(j), &self.need[j * N_RES]):
            return 0
        if self.simple[j] and self.n_live_resv == 0:
            return 1
        n = tree_next(self, self.first_free_node, s.per_task)
        while n >= 0:
            if not self._may_use(n, j):
                n = tree_next(self, n + 1, s.per_task)
                continue
            k = s.n_tasks
            for r in range(N_RES):
                per = s.per_task[r]
                if per > 0 and self.node_free[n * N_RES + r] // per < k:
                    k = self.node_free[n * N_RES + r] // per
            placeable += k
            if placeable >= s.n_tasks:
                return 1
            n = tree_next(self, n + 1, s.per_task)
        return 0

    cdef inline int64_t _tasks_fit(self, int n, JobSpec* s, int64_t most) noexcept nogil:
        """How many of ``s``'s tasks (at most ``most``) node ``n`` can take now."""
        cdef int r
        cdef int64_t k = most, per
        for r in range(N_RES):
            per = s.per_task[r]
            if per > 0 and self.node_free[n * N_RES + r] // per < k:
                k = self.node_free[n * N_RES + r] // per
        return k

    cdef int _take_on_node(self, JobSpec* s, int n, int64_t k) noexcept nogil:
        """Put ``k`` tasks on node ``n``: an allocation entry, less free there."""
        cdef int r
        if _reserve(<void**>&self.alloc, &self.cap_alloc, self.n_alloc + 1,
                    sizeof(AllocEntry)) != 0:
            return -1
        self.alloc[self.n_alloc].node_idx = n
        self.alloc[self.n_alloc].n_tasks = <int32_t>k
        self.n_alloc += 1
        if self.node_tasks[n] == 0:
            self.idle_since[n] = -1
            self.n_busy_up += 1  # (only UP nodes take tasks)
        self.node_tasks[n] += <int32_t>k
        for r in range(N_RES):
            self.node_free[n * N_RES + r] -= k * s.per_task[r]
            self.total_free[r] -= k * s.per_task[r]
        tree_update(self, n)
        if self.n_part > 1:
            for r in range(N_RES):
                self.part_free[self.node_part[n] * N_RES + r] -= k * s.per_task[r]
        return 0

    cdef int _pick_node(self, int j, int64_t rem, int64_t* k_out) noexcept nogil:
        """best_fit: the node left with the fewest free cores; spread: the node with
        the most free cores. Ties go to the lowest index. -1 if none can take a task."""
        cdef int n, best = -1
        cdef int64_t k, score, best_score = 0
        cdef JobSpec* s = &self.jobs[j]
        n = tree_next(self, self.first_free_node, s.per_task)
        while n >= 0:
            k = self._tasks_fit(n, s, rem) if self._may_use(n, j) else 0
            if k <= 0:
                n = tree_next(self, n + 1, s.per_task)
                continue
            if self.placement == PLACE_BEST_FIT:
                score = -(self.node_free[n * N_RES + RES_CORES] - k * s.per_task[RES_CORES])
            else:
                score = self.node_free[n * N_RES + RES_CORES]
            if best < 0 or score > best_score:
                best = n
                best_score = score
                k_out[0] = k
            n = tree_next(self, n + 1, s.per_task)
        return best

    cdef int _cons_tres_run(self, int j, int64_t rem, int* last) noexcept nogil:
        """Slurm's cons_tres, step one: the run of consecutive nodes (in index
        order, every one able to take a task of ``j``) that holds ``rem`` tasks
        with the fewest tasks in all, the first of equal ones; if none holds
        them, the run holding the most. Its first node (-1: none), ``last`` its
        last. Every node is visited: a node without room ends a run."""
        cdef int n, start = -1, best = -1
        cdef int64_t k, cap = 0, best_cap = 0
        cdef bint enough, best_enough = 0
        cdef JobSpec* s = &self.jobs[j]
        for n in range(self.n_nodes + 1):
            k = self._tasks_fit(n, s, rem) if n < self.n_nodes and self._may_use(n, j) else 0
            if k > 0:
                if start < 0:
                    start = n
                    cap = 0
                # (the node's whole room, as Slurm counts a run's CPUs)
                cap += self._tasks_fit(n, s, INT64_MAX)
                continue
            if start < 0:
                continue
            enough = cap >= rem
            if (best < 0 or (enough and not best_enough)
                    or (enough and cap < best_cap) or (not enough and not best_enough and cap > best_cap)):
                best = start
                best_cap = cap
                best_enough = enough
                last[0] = n - 1
            start = -1
        return best

    cdef int _start_cons_tres(self, int j) noexcept nogil:
        """Place job ``j`` as Slurm's cons_tres does (equal node weights, no
        topology): pick a run of nodes (``_cons_tres_run``); in it, the node
        with the fewest free cores that takes every remaining task (the first
        of equal ones), else its nodes in order, each as full as it can be; a
        run used up, pick another for what is left."""
        cdef int n, first, last = -1, best
        cdef int64_t k, rem = self.jobs[j].n_tasks, free_c, best_free = 0
        cdef JobSpec* s = &self.jobs[j]
        while rem > 0:
            first = self._cons_tres_run(j, rem, &last)
            if first < 0:
                return -1
            best = -1
            for n in range(first, last + 1):
                if self._tasks_fit(n, s, rem) >= rem:
                    free_c = self.node_free[n * N_RES + RES_CORES]
                    if best < 0 or free_c < best_free:
                        best = n
                        best_free = free_c
            if best >= 0:
                if self._take_on_node(s, best, rem) != 0:
                    return -1
                return 0
            for n in range(first, last + 1):
                k = self._tasks_fit(n, s, rem)
                if k > 0:
                    if self._take_on_node(s, n, k) != 0:
                        return -1
                    rem -= k
                    if rem == 0:
                        break
        return 0

    cdef int _start(self, int j, int64_t now) noexcept nogil:
        """Place job ``j`` by the placement strategy and record the decision.

        The caller checked _fits_now. first_fit takes nodes in index order;
        best_fit (pack) and spread (balance) choose node by node; cons_tres
        as Slurm's cons_tres (``_start_cons_tres``).
        """
        cdef int n
        cdef int64_t k, rem = self.jobs[j].n_tasks
        cdef JobSpec* s = &self.jobs[j]
        cdef int off = self.n_alloc
        if self.placement == PLACE_CONS_TRES:
            if self._start_cons_tres(j) != 0:
                return -1
        elif self.placement == PLACE_FIRST_FIT:
            n = tree_next(self, self.first_free_node, s.per_task)
            while n >= 0 and rem > 0:
                k = self._tasks_fit(n, s, rem) if self._may_use(n, j) else 0
                if k > 0:
                    if self._take_on_node(s, n, k) != 0:
                        return -1
                    rem -= k
                n = tree_next(self, n + 1, s.per_task)
        else:
            while rem > 0:
                n = self._pick_node(j, rem, &k)
                if n < 0:
                    return -1
                if self._take_on_node(s, n, k) != 0:
                    return -1
                rem -= k
        return self._commit_start(j, now, off, 1)

    cdef int _commit_start(self, int j, int64_t now, int off, bint record) noexcept nogil:
        """Job ``j`` holds the allocation entries from ``off`` on: it runs from
        ``now``; ``record``: list it among the jobs the pass started."""
        self.alloc_off[j] = off
        self.alloc_cnt[j] = self.n_alloc - off
        self.live_alloc += self.n_alloc - off
        while (self.first_free_node < self.n_nodes and
               (self.node_state[self.first_free_node] != NODE_UP or
                self.node_free[self.first_free_node * N_RES + RES_CORES] <= 0)):
            self.first_free_node += 1
        self.job_state[j] = JS_RUNNING
        self.run_cores += self.need[j * N_RES + RES_CORES]
        self._count_user(j, 1)
        if self.queued_limits_on:
            self._unsee(j)
        self.start_s[j] = now
        self.reserved_s[j] = -1
        if self._run_insert(j) != 0:
            return -1
        if not record:
            return 0
        if _reserve(<void**>&self.started, &self.cap_started, self.n_started + 1,
                    sizeof(int32_t)) != 0:
            return -1
        self.started[self.n_started] = j
        self.n_started += 1
        return 0

    cdef void _release(self, int j, int64_t now) noexcept nogil:
        cdef int a, n, r
        _mf_usage_at_end(self, j, now)
        cdef int64_t k
        for a in range(self.alloc_off[j], self.alloc_off[j] + self.alloc_cnt[j]):
            n = self.alloc[a].node_idx
            k = self.alloc[a].n_tasks
            for r in range(N_RES):
                self.node_free[n * N_RES + r] += k * self.jobs[j].per_task[r]
                if self.node_state[n] == NODE_UP:
                    self.total_free[r] += k * self.jobs[j].per_task[r]
                    if self.n_part > 1:
                        self.part_free[self.node_part[n] * N_RES + r] += k * self.jobs[j].per_task[r]
            if n < self.first_free_node and self.node_state[n] == NODE_UP:
                self.first_free_node = n
            tree_update(self, n)
            self.node_tasks[n] -= <int32_t>k
            if self.node_tasks[n] == 0:
                if self.node_state[n] == NODE_UP:
                    self.n_busy_up -= 1
                    _mark_idle(self, n, now)
                elif self.node_state[n] == NODE_DRAINING:
                    _node_to(self, n, NODE_OFF, now)  # drained: it leaves
        self.run_cores -= self.need[j * N_RES + RES_CORES]
        self.live_alloc -= self.alloc_cnt[j]
        self.alloc_cnt[j] = 0
        self._count_user(j, -1)
        self._run_remove(j)
        self.need_full_pass = 1
        if self.n_alloc > 4096 and self.n_alloc > 4 * self.live_alloc:
            self._compact_alloc()

    cdef void _compact_alloc(self) noexcept nogil:
        """Rewrite the allocation pool with only the running jobs' entries."""
        cdef int i, j, a, dst = 0
        cdef AllocEntry* tmp
        if self._run_sorted() != 0:
            return
        tmp = <AllocEntry*>malloc(max(self.live_alloc, 1) * sizeof(AllocEntry))
        if tmp == NULL:
            return
        for i in range(self.n_run):
            j = self.run[i].job_idx
            for a in range(self.alloc_cnt[j]):
                tmp[dst + a] = self.alloc[self.alloc_off[j] + a]
            self.alloc_off[j] = dst
            dst += self.alloc_cnt[j]
        memcpy(self.alloc, tmp, dst * sizeof(AllocEntry))
        free(tmp)
        self.n_alloc = dst

    # ------------------------------------------------------------ the pass

    cpdef int schedule(self, int64_t now) except -2:
        """One scheduling pass at ``now``; returns how many jobs it started.

        The started slot indices are then in ``started_jobs()`` (or read by a
        feed), in the order the pass started them.
        """
        cdef int rc
        # A pass over a long queue lets other Python threads run (the live
        # agent's API); a short one keeps the GIL: dropping and retaking it
        # would cost more than the pass.
        cdef bint release = self.n_pending > 512
        self.n_started = 0
        if release:
            with nogil:
                rc = self._run_pass(now)
        else:
            rc = self._run_pass(now)
        self.n_passes += 1
        if rc != PASS_OK:
            raise MemoryError("scheduling pass ran out of memory")
        return self.n_started

    cdef int _run_pass(self, int64_t now) noexcept nogil:
        cdef int rc
        self.cur_now = now
        if self.begin_heap.n > 0 and self.begin_heap.t[0] <= now:
            if self._release_begin(now) != 0:
                return PASS_NO_MEMORY
        if self.n_live_resv:
            self._expire_resv(now)
        if self.order == ORDER_MULTIFACTOR and now >= self.next_prio_s and self.n_pending > 0:
            # (an empty queue has nothing to order: the first pass with a
            # pending job recomputes, usage included)
            if _mf_recompute(self, now) != 0:
                return PASS_NO_MEMORY
        if self.starve_limit_s > 0 and self.starve_fifo.head < self.starve_fifo.n:
            if self._promote_starved(now) != 0:
                return PASS_NO_MEMORY
        self._reset_seen()
        if self.n_part > 1:
            rc = self._pass_partition(now)
        elif self.backfill == BF_CONSERVATIVE:
            rc = self._pass_conservative(now)
        else:
            rc = self._pass_easy(now)
        self.need_full_pass = 0
        self.n_fresh = 0
        if self.n_tomb > 64 and self.n_tomb > self.n_pending:
            self._compact_queue()
        return rc

    cdef int _pass_partition(self, int64_t now) noexcept nogil:
        """One pass per partition, each over its own nodes and its own jobs of the queue."""
        cdef int p, rc
        for p in range(self.n_part):
            self._set_part(p)
            self.need_full_pass = 1
            if self.backfill == BF_CONSERVATIVE:
                rc = self._pass_conservative(now)
            else:
                rc = self._pass_easy(now)
            if rc != PASS_OK:
                return rc
        self._set_part(0)
        return PASS_OK

    cdef inline int _in_part(self, int j) noexcept nogil:
        return self.n_part == 1 or self.jobs[j].part_idx == self.cur_part

    cdef void _set_part(self, int p) noexcept nogil:
        self.cur_part = p
        if self.n_part == 1:
            self.tf = &self.total_free[0]
        else:
            self.tf = &self.part_free[p * N_RES]

    cdef inline int64_t* _free_of(self, int j) noexcept nogil:
        if self.n_part == 1:
            return &self.total_free[0]
        return &self.part_free[self.jobs[j].part_idx * N_RES]

    cdef int _pass_easy(self, int64_t now) noexcept nogil:
        """FCFS-order starts, then (EASY) backfill around the head's reservation."""
        cdef int j, k, head_pos, examined = 0, pos
        if (not self.need_full_pass and self.head_idx >= 0 and self.bf_depth == 0
                and not self._limits_on() and self.n_live_resv == 0 and self.n_part == 1
                and not self.easy_profile
                and self.job_state[self.head_idx] == JS_PENDING):
            # Only arrivals since the last pass, all behind the head: older jobs
            # failed then and still fail (no resources came back, time only moved
            # on), so only the newcomers are candidates, in queue order.
            if self.backfill == BF_NONE:
                return PASS_OK
            qsort(self.fresh, self.n_fresh, sizeof(QEntry), _qsort_cmp)
            for k in range(self.n_fresh):
                if self.tf[RES_CORES] <= 0:
                    break
                j = self.fresh[k].job_idx
                if self.job_state[j] != JS_PENDING:
                    continue
                self.n_jobs_examined += 1
                if self._try_backfill(j, now, -1) != PASS_OK:
                    return PASS_NO_MEMORY
            return PASS_OK
        self.n_full_passes += 1
        head_pos = self._start_in_order(now, &examined)
        if head_pos == -2:
            return PASS_NO_MEMORY
        if head_pos >= 0:
            examined += 1
        self.n_jobs_examined += examined
        if head_pos < 0:
            self.head_idx = -1
            return PASS_OK
        self.head_idx = self.q[head_pos].job_idx
        self.head_entry = self.q[head_pos]
        if self.backfill == BF_NONE:
            return PASS_OK
        pos = head_pos + 1
        while pos < self.q_end and (self.q[pos].job_idx < 0 or not self._in_part(self.q[pos].job_idx)):
            pos += 1
        if self.n_live_resv or (pos < self.q_end and self.starved[self.q[pos].job_idx]):
            # starved jobs beyond the head, or advance reservations: more than
            # one reservation to respect, so backfill against a profile
            return self._pass_easy_profile(now, head_pos, examined)
        self.easy_profile = 0
        self._compute_shadow(self.head_idx, now)
        pos = head_pos + 1
        while pos < self.q_end:
            if self.tf[RES_CORES] <= 0:
                break
            if self.bf_depth > 0 and examined >= self.bf_depth:
                break
            j = self.q[pos].job_idx
            if j >= 0 and self._in_part(j):
                examined += 1
                self.n_jobs_examined += 1
                if not self._visit_limit(j) and self._try_backfill(j, now, pos) != PASS_OK:
                    return PASS_NO_MEMORY
            pos += 1
        return PASS_OK

    cdef int _pass_easy_profile(self, int64_t now, int head_pos, int examined) noexcept nogil:
        """EASY with several reservations: the head's and every starved job's
        (they sort first), plus the advance reservations' windows; any other
        job starts only if it fits now for its whole requested time in the
        profile left, so it delays none of them.

        Starting a job that fits in the profile is at least as permissive as
        the classic shadow/extra rule, and still never delays a reservation.
        """
        cdef int pos = head_pos, j, first = 1
        cdef int64_t t
        self.easy_profile = 1  # no shadow for incremental passes to build on
        self.shadow_s = NEVER
        if self._build_profile(now) != 0:
            return PASS_NO_MEMORY
        while pos < self.q_end:
            j = self.q[pos].job_idx
            if j < 0 or not self._in_part(j):
                pos += 1
                continue
            if not first and not self.starved[j]:
                break
            if not first:
                examined += 1
                self.n_jobs_examined += 1
            if first or not self._visit_limit(j):
                if self._reserve_or_start(j, now, pos) != PASS_OK:
                    return PASS_NO_MEMORY
                if first:
                    t = self.reserved_s[j]
                    self.shadow_s = NEVER if t < 0 else t
                    self.reserved_s[j] = -1  # EASY keeps no per-job reservations
            first = 0
            pos += 1
        pos = head_pos + 1
        while pos < self.q_end:
            if self.tf[RES_CORES] <= 0:
                break
            if self.bf_depth > 0 and examined >= self.bf_depth:
                break
            j = self.q[pos].job_idx
            if j >= 0 and not self.starved[j] and self._in_part(j):
                examined += 1
                self.n_jobs_examined += 1
                if not self._visit_limit(j):
                    if self._owner_resv(j) >= 0:
                        if self._fits_now(j):
                            if self._start(j, now) != 0:
                                return PASS_NO_MEMORY
                            self._tombstone(pos)
                    elif (self._fits_now(j) and prof_earliest(&self.prof, &self.need[j * N_RES],
                                                              self.jobs[j].walltime_s, now) == now):
                        if self._start(j, now) != 0:
                            return PASS_NO_MEMORY
                        self._tombstone(pos)
                        if prof_take(&self.prof, now, now + self.jobs[j].walltime_s,
                                     &self.need[j * N_RES]) != 0:
                            return PASS_NO_MEMORY
            pos += 1
        return PASS_OK

    cdef inline int _limits_on(self) noexcept nogil:
        return self.limits_on

    cdef inline int _ent(self, int j, int lvl) noexcept nogil:
        if lvl == LVL_USER:
            return self.jobs[j].user_idx
        if lvl == LVL_GROUP:
            return self.jobs[j].group_idx
        return self.jobs[j].qos_idx

    cdef int _over_limit(self, int j) noexcept nogil:
        """The reason (UserLimit, GroupLimit, QOSLimit) why starting ``j`` would
        exceed a cap on running jobs, cores or GPUs; 0 if none would be."""
        cdef int lvl, e
        cdef int64_t* lim
        cdef int64_t* use
        if not self.limits_on:
            return 0
        for lvl in range(N_LVL):
            e = self._ent(j, lvl)
            if e < 0 or e >= self.n_ent[lvl]:
                continue
            lim = &self.ent_lim[lvl][e * N_LIM]
            use = &self.ent_use[lvl][e * N_USE]
            if ((lim[LIM_JOBS] > 0 and use[0] >= lim[LIM_JOBS])
                    or (lim[LIM_CORES] > 0
                        and use[1] + self.need[j * N_RES + RES_CORES] > lim[LIM_CORES])
                    or (lim[LIM_GPUS] > 0
                        and use[2] + self.need[j * N_RES + RES_GPUS] > lim[LIM_GPUS])):
                return _LIMIT_REASON[lvl]
        return 0

    cdef int _visit_limit(self, int j) noexcept nogil:
        """As _over_limit, plus the queued-jobs caps: ``j`` is met by the current
        queue walk (reset by _reset_seen) and only the first N of an entity's
        pending jobs in queue order are considered."""
        cdef int lvl, e, why = 0
        cdef int64_t cap
        if not self.limits_on:
            return 0
        if self.queued_limits_on:
            for lvl in range(N_LVL):
                e = self._ent(j, lvl)
                if e < 0 or e >= self.n_ent[lvl]:
                    continue
                cap = self.ent_lim[lvl][e * N_LIM + LIM_QUEUED]
                if cap > 0 and self.ent_seen[lvl][e] >= cap and why == 0:
                    why = _LIMIT_REASON[lvl]
                self.ent_seen[lvl][e] += 1
            if why:
                return why
        return self._over_limit(j)

    cdef void _unsee(self, int j) noexcept nogil:
        """A job met by the walk has started: it no longer counts as queued."""
        cdef int lvl, e
        for lvl in range(N_LVL):
            e = self._ent(j, lvl)
            if 0 <= e < self.n_ent[lvl] and self.ent_seen[lvl][e] > 0:
                self.ent_seen[lvl][e] -= 1

    cdef void _reset_seen(self) noexcept nogil:
        cdef int lvl
        if self.queued_limits_on:
            for lvl in range(N_LVL):
                if self.n_ent[lvl]:
                    memset(self.ent_seen[lvl], 0, self.n_ent[lvl] * sizeof(int32_t))

    cdef void _count_user(self, int j, int sign) noexcept nogil:
        """Running jobs, cores and GPUs held, per user, group and QoS."""
        cdef int lvl, e
        for lvl in range(N_LVL):
            e = self._ent(j, lvl)
            if 0 <= e < self.n_ent[lvl]:
                self.ent_use[lvl][e * N_USE] += sign
                self.ent_use[lvl][e * N_USE + 1] += sign * self.need[j * N_RES + RES_CORES]
                self.ent_use[lvl][e * N_USE + 2] += sign * self.need[j * N_RES + RES_GPUS]

    cdef int _start_in_order(self, int64_t now, int* examined) noexcept nogil:
        """Start queued jobs in order while they fit, passing over jobs a limit holds back.

        Returns the queue position of the first job that does not fit (not
        counted in ``examined``), -1 when every job was started or passed
        over, -2 when out of memory.
        """
        cdef int pos = self.q_begin, j
        while pos < self.q_end:
            j = self.q[pos].job_idx
            if j < 0 or not self._in_part(j):
                pos += 1
                continue
            if self._visit_limit(j):  # passed over: never the head, never reserved
                examined[0] += 1
                self.reserved_s[j] = -1
                pos += 1
                continue
            if not self._fits_now(j):
                return pos
            if self._start(j, now) != 0:
                return -2
            self._tombstone(pos)
            examined[0] += 1
            pos += 1
        return -1

    cdef int _try_backfill(self, int j, int64_t now, int pos) noexcept nogil:
        """Start ``j`` if it cannot delay the head's reservation (EASY rule)."""
        cdef int r
        cdef int64_t* need = &self.need[j * N_RES]
        cdef int before_shadow = (self.shadow_s == NEVER or
                                  now + self.jobs[j].walltime_s <= self.shadow_s)
        if not before_shadow and not _ge(self.extra, need):
            return PASS_OK
        if not self._fits_now(j):
            return PASS_OK
        if self._start(j, now) != 0:
            return PASS_NO_MEMORY
        self._tombstone(pos if pos >= 0 else self._find_pos(j))
        if not before_shadow:
            for r in range(N_RES):
                self.extra[r] -= need[r]
        return PASS_OK

    cdef void _compute_shadow(self, int head, int64_t now) noexcept nogil:
        """Shadow time: when running jobs' requested ends free enough for the head.

        extra = what is free at the shadow time beyond the head's need; a
        backfilled job that outlives the shadow time may use only that.
        """
        cdef int64_t avail[4]
        cdef int64_t t
        cdef int i = 0, r, j
        cdef int64_t* need = &self.need[head * N_RES]
        for r in range(N_RES):
            avail[r] = self.tf[r]
        if _ge(avail, need):
            self.shadow_s = now
            for r in range(N_RES):
                self.extra[r] = avail[r] - need[r]
            return
        if self._run_sorted() != 0:  # out of memory: no shadow, nothing backfills past it
            self.shadow_s = now
            for r in range(N_RES):
                self.extra[r] = 0
            return
        while i < self.n_run:
            t = self.run[i].end_req_s
            while i < self.n_run and self.run[i].end_req_s == t:
                j = self.run[i].job_idx
                if self._in_part(j):
                    for r in range(N_RES):
                        avail[r] += self.need[j * N_RES + r]
                i += 1
            if _ge(avail, need):
                self.shadow_s = t if t > now else now
                for r in range(N_RES):
                    self.extra[r] = avail[r] - need[r]
                return
        self.shadow_s = NEVER
        for r in range(N_RES):
            self.extra[r] = 0

    # ------------------------------------------------------------ conservative

    cdef int _pass_conservative(self, int64_t now) noexcept nogil:
        """Every queued job, in order, takes the earliest slot of the profile."""
        cdef int pos, j, k, head, examined = 0
        cdef int64_t free_now
        if (not self.need_full_pass and self.resv_complete and self.prof.n_blocks > 0
                and self.bf_depth == 0 and self.min_resv_s > now and not self._limits_on()
                and self.n_live_resv == 0 and self.n_part == 1
                and prof_second_time(&self.prof) > now):
            # Only tail arrivals: every older reservation stands; add theirs.
            prof_set_first_time(&self.prof, now)
            qsort(self.fresh, self.n_fresh, sizeof(QEntry), _qsort_cmp)
            for k in range(self.n_fresh):
                j = self.fresh[k].job_idx
                if self.job_state[j] != JS_PENDING:
                    continue
                self.n_jobs_examined += 1
                if self._reserve_or_start(j, now, -1) != PASS_OK:
                    return PASS_NO_MEMORY
            return PASS_OK
        self.n_full_passes += 1
        self.min_resv_s = NEVER
        self.last_pass_now = now
        self.resv_complete = 1
        if self._fill_suffix_min() != 0:
            return PASS_NO_MEMORY
        # Until a job fails to start, only starts have been made: free resources
        # can only grow with time (running jobs end, started ones end), so a job
        # that fits now fits for its whole walltime, as in EASY's first phase.
        # The profile is built at the first job that does not start, from the
        # running jobs, which by then include the ones just started: the same
        # profile a full rebuild gives.
        pos = self._start_in_order(now, &examined)
        self.n_jobs_examined += examined
        if pos == -2:
            return PASS_NO_MEMORY
        if pos == -1 or self.tf[RES_CORES] < self.suffix_min[pos - self.q_begin]:
            # all started, or nothing more can start: no profile was needed (the
            # stored one is stale for incremental passes); reservations on demand
            self.resv_complete = 0
            return PASS_OK
        if self._build_profile(now) != 0:
            return PASS_NO_MEMORY
        head = pos
        while pos < self.q_end:
            j = self.q[pos].job_idx
            if j >= 0 and self._in_part(j):
                # The profile's first segment leaves out the nodes of an open
                # advance reservation, which its owner's jobs may still use now:
                # with reservations live, only the cores free on every UP node
                # bound what can start.
                free_now = (self.tf[RES_CORES] if self.n_live_resv
                            else prof_free_now_cores(&self.prof))
                if free_now < self.suffix_min[pos - self.q_begin]:
                    # No job from here on fits in the cores free now, so none can
                    # start: the decisions are complete. Their reservations are
                    # computed only if someone asks (reservations, estimates).
                    self.resv_complete = 0
                    break
                examined += 1
                if self.bf_depth > 0 and examined > self.bf_depth:
                    self.resv_complete = 0
                    break
                self.n_jobs_examined += 1
                # (the first job here was met, and counted, by _start_in_order)
                if (self._over_limit(j) if pos == head else self._visit_limit(j)):
                    self.reserved_s[j] = -1  # passed over: no reservation
                elif self._reserve_or_start(j, now, pos) != PASS_OK:
                    return PASS_NO_MEMORY
            pos += 1
        return PASS_OK

    cdef int _fill_suffix_min(self) noexcept nogil:
        """suffix_min[p - q_begin]: fewest cores any pending job at or after p asks for."""
        cdef int p, n = self.q_end - self.q_begin, j
        cdef int64_t m = NEVER
        if _reserve(<void**>&self.suffix_min, &self.cap_suffix, n + 1, sizeof(int64_t)) != 0:
            return -1
        for p in range(self.q_end - 1, self.q_begin - 1, -1):
            j = self.q[p].job_idx
            if j >= 0 and self._in_part(j) and self.need[j * N_RES + RES_CORES] < m:
                m = self.need[j * N_RES + RES_CORES]
            self.suffix_min[p - self.q_begin] = m
        return 0

    cdef int _complete_reservations(self) noexcept nogil:
        """Reservations of every pending job as the last pass would have made them.

        Rebuilding at the last pass's time from the running jobs (which now
        include the ones that pass started) gives the profile that pass had;
        each pending job then takes its slot in queue order, starting nothing.
        """
        cdef int pos, j, p
        cdef int64_t s, now = self.last_pass_now
        self.min_resv_s = NEVER
        self._reset_seen()
        for p in range(self.n_part):
            self._set_part(p)
            if self._reserve_partition(now) != 0:
                self._set_part(0)
                return -1
        self._set_part(0)
        self.resv_complete = 1
        return 0

    cdef int _reserve_partition(self, int64_t now) noexcept nogil:
        """_complete_reservations for the jobs of the current partition."""
        cdef int pos, j
        cdef int64_t s
        if self._build_profile(now) != 0:
            return -1
        for pos in range(self.q_begin, self.q_end):
            j = self.q[pos].job_idx
            if j < 0 or not self._in_part(j):
                continue
            if self._visit_limit(j) or self._owner_resv(j) >= 0:
                self.reserved_s[j] = -1
                continue
            s = prof_earliest(&self.prof, &self.need[j * N_RES], self.jobs[j].walltime_s, now)
            if s == NEVER:
                self.reserved_s[j] = -1
                continue
            self.reserved_s[j] = s
            if s < self.min_resv_s:
                self.min_resv_s = s
            if prof_take(&self.prof, s, s + self.jobs[j].walltime_s, &self.need[j * N_RES]) != 0:
                return -1
        return 0

    cdef int _reserve_or_start(self, int j, int64_t now, int pos) noexcept nogil:
        cdef int64_t s
        if self.n_live_resv and self._owner_resv(j) >= 0:
            # inside its own advance reservation: only those nodes, outside the profile
            self.reserved_s[j] = -1
            if self._fits_now(j):
                if self._start(j, now) != 0:
                    return PASS_NO_MEMORY
                self._tombstone(pos if pos >= 0 else self._find_pos(j))
            return PASS_OK
        s = prof_earliest(&self.prof, &self.need[j * N_RES], self.jobs[j].walltime_s, now)
        if s == NEVER:
            self.reserved_s[j] = -1
            return PASS_OK
        if s == now and self._fits_now(j):
            if self._start(j, now) != 0:
                return PASS_NO_MEMORY
            self._tombstone(pos if pos >= 0 else self._find_pos(j))
        else:
            self.reserved_s[j] = s
            if s < self.min_resv_s:
                self.min_resv_s = s
        if prof_take(&self.prof, s, s + self.jobs[j].walltime_s, &self.need[j * N_RES]) != 0:
            return PASS_NO_MEMORY
        return PASS_OK

    cdef int _build_profile(self, int64_t now) noexcept nogil:
        """Free resources over time from the running jobs' requested ends (the pass's profile)."""
        return self._build_profile_into(&self.prof, now)

    cdef int _build_profile_into(self, Profile* P, int64_t now) noexcept nogil:
        """_build_profile into ``P``: a query builds its own, leaving the pass's intact."""
        cdef int i = 0, r, j, k, n, a
        cdef AdvanceResv* R
        cdef int64_t t, ws
        cdef int64_t cur[4]
        cdef int64_t cap[4]
        prof_clear(P)
        if self._run_sorted() != 0:
            return -1
        for r in range(N_RES):
            cur[r] = self.tf[r]
        # running jobs already past their requested end count as free now
        while i < self.n_run and self.run[i].end_req_s <= now:
            j = self.run[i].job_idx
            if self._in_part(j):
                for r in range(N_RES):
                    cur[r] += self.need[j * N_RES + r]
            i += 1
        if prof_append(P, now, cur) != 0:
            return -1
        while i < self.n_run:
            t = self.run[i].end_req_s
            while i < self.n_run and self.run[i].end_req_s == t:
                j = self.run[i].job_idx
                if self._in_part(j):
                    for r in range(N_RES):
                        cur[r] += self.need[j * N_RES + r]
                i += 1
            if prof_append(P, t, cur) != 0:
                return -1
        # Advance reservations: over the window, what is free on the reserved nodes
        # is not free for others -- what is free there now, and what running jobs
        # release there before the window ends, from their requested end on.
        for k in range(self.n_resv):
            R = &self.resv[k]
            if R.end_s <= now:
                continue
            ws = R.start_s if R.start_s > now else now
            for r in range(N_RES):
                cap[r] = 0
            for n in range(self.n_nodes):
                if (R.on_node[n] and self.node_state[n] == NODE_UP
                        and (self.n_part == 1 or self.node_part[n] == self.cur_part)):
                    for r in range(N_RES):
                        cap[r] += self.node_free[n * N_RES + r]
            if prof_take(P, ws, R.end_s, cap) != 0:
                return -1
            for i in range(self.n_run):
                j = self.run[i].job_idx
                t = self.run[i].end_req_s
                if t >= R.end_s or not self._in_part(j):
                    continue
                for r in range(N_RES):
                    cap[r] = 0
                for a in range(self.alloc_off[j], self.alloc_off[j] + self.alloc_cnt[j]):
                    n = self.alloc[a].node_idx
                    if R.on_node[n] and self.node_state[n] == NODE_UP:
                        for r in range(N_RES):
                            cap[r] += self.alloc[a].n_tasks * self.jobs[j].per_task[r]
                if prof_take(P, t if t > ws else ws, R.end_s, cap) != 0:
                    return -1
        return 0

    # ------------------------------------------------------------ queries

    def estimate_start(self, int j, int64_t now):
        """Earliest start of pending job ``j`` from the reservation profile.

        Conservative keeps every reservation, so its answer is the job's own.
        Other modes walk the queue in order and give each job ahead of ``j`` a
        reservation, as Slurm's start estimate does. -1 if it never fits.

        A query: it builds a profile of its own and leaves the state as it
        found it (QueueSnapshot answers for every pending job at once).
        """
        self._check_idx(j)
        cdef int pos, i, rc = 0
        cdef int64_t s = NEVER
        cdef int64_t saved_now = self.cur_now
        cdef Profile P
        if self.job_state[j] == JS_RUNNING or self.job_state[j] == JS_ENDED:
            return self.start_s[j]
        if self.job_state[j] != JS_PENDING:
            return -1
        if (self.backfill == BF_CONSERVATIVE and self.resv_complete and self.reserved_s[j] >= 0
                and not self.need_full_pass):
            return max(self.reserved_s[j], now)
        memset(&P, 0, sizeof(Profile))
        self.cur_now = now
        self._set_part(self.jobs[j].part_idx if self.n_part > 1 else 0)
        rc = self._build_profile_into(&P, now)
        self._set_part(0)
        if rc == 0:
            self._reset_seen()
            pos = self.q_begin
            while pos < self.q_end:
                i = self.q[pos].job_idx
                if i == j:
                    break
                if (i >= 0 and self.jobs[i].part_idx == self.jobs[j].part_idx
                        and not self._visit_limit(i) and self._owner_resv(i) < 0):
                    s = prof_earliest(&P, &self.need[i * N_RES], self.jobs[i].walltime_s, now)
                    if s != NEVER and prof_take(&P, s, s + self.jobs[i].walltime_s,
                                                &self.need[i * N_RES]) != 0:
                        rc = -1
                        break
                pos += 1
        if rc == 0:
            s = prof_earliest(&P, &self.need[j * N_RES], self.jobs[j].walltime_s, now)
        prof_release(&P)
        self.cur_now = saved_now
        if rc != 0:
            raise MemoryError()
        return -1 if s == NEVER else s

    def why_pending(self, int j):
        """Reason code (REASONS) for a job that is not running, as of the last pass.

        Held: Dependency (a parent has not ended), BeginTime (think time after
        it), Held (on hold). Pending: NodeDown when the nodes up could never
        hold it; a limit (UserLimit, GroupLimit, QOSLimit) that holds it back;
        Resources for the first job in line, Reservation instead when free
        resources would fit it but for an advance reservation; Priority for
        the others (BackfillDepth beyond the backfill depth).
        """
        self._check_idx(j)
        cdef int pos, i, why, first = -1, examined = 0, r, live
        if self.job_state[j] == JS_HELD:
            return self.hold_why[j]
        if self.job_state[j] != JS_PENDING:
            return WHY_NOT_PENDING
        for r in range(N_RES):
            if self.need[j * N_RES + r] > (self.total_cap[r] if self.n_part == 1 else
                                           self.part_cap[self.jobs[j].part_idx * N_RES + r]):
                return WHY_NODE_DOWN
        self._reset_seen()
        pos = self.q_begin
        while pos < self.q_end:
            i = self.q[pos].job_idx
            if i >= 0 and self.jobs[i].part_idx == self.jobs[j].part_idx:
                examined += 1
                why = self._visit_limit(i)
                if i == j:
                    if why:
                        return why
                    break
                if not why and first < 0:
                    first = i
            pos += 1
        if first < 0:
            if self.n_live_resv and not self._fits_now(j):
                live = self.n_live_resv
                self.n_live_resv = 0
                why = WHY_RESERVATION if self._fits_now(j) else WHY_RESOURCES
                self.n_live_resv = live
                return why
            return WHY_RESOURCES
        if self.bf_depth > 0 and examined > self.bf_depth and self.backfill != BF_NONE:
            return WHY_BACKFILL_DEPTH
        return WHY_PRIORITY

    def dependency_cancelled(self):
        """Per slot: 1 if the job was cancelled because a dependency can never be met."""
        out = np.empty(self.n_jobs, dtype=np.int8)
        cdef int8_t[::1] v = out
        if self.n_jobs:
            memcpy(&v[0], self.dep_cancelled, self.n_jobs * sizeof(int8_t))
        return out

    def priorities(self):
        """Per slot: the priority key as last set or computed (a copy)."""
        out = np.empty(self.n_jobs, dtype=np.float64)
        cdef double[::1] v = out
        cdef int k
        for k in range(self.n_jobs):
            v[k] = self.jobs[k].priority
        return out

    def next_wakeup(self):
        """When a pass is needed though no job event happens: a held job's think
        time ends, or an advance reservation's window opens or closes; -1 none."""
        cdef int64_t t = self._wakeup()
        return -1 if t == NEVER else t

    cdef int64_t _wakeup(self) noexcept nogil:
        cdef int64_t t = heap_top_time(&self.begin_heap)
        cdef int k
        cdef AdvanceResv* R
        for k in range(self.n_resv):
            R = &self.resv[k]
            if R.start_s > self.cur_now and R.start_s < t:
                t = R.start_s
            elif R.end_s > self.cur_now and R.end_s < t:
                t = R.end_s
        cdef int64_t a = _autoscale_wakeup(self)
        return a if a < t else t

    def started_jobs(self):
        """Slot indices started by the last pass, in start order (a copy)."""
        out = np.empty(self.n_started, dtype=np.int32)
        cdef int32_t[::1] v = out
        cdef int k
        for k in range(self.n_started):
            v[k] = self.started[k]
        return out

    def pending_jobs(self):
        """Slot indices of the pending jobs in queue order (a copy)."""
        out = np.empty(self.n_pending, dtype=np.int32)
        cdef int32_t[::1] v = out
        cdef int p, k = 0
        for p in range(self.q_begin, self.q_end):
            if self.q[p].job_idx >= 0:
                v[k] = self.q[p].job_idx
                k += 1
        return out

    def job_allocation(self, int j):
        """(node_idx, n_tasks) arrays of a running job's placement."""
        self._check_idx(j)
        cdef int a, c = self.alloc_cnt[j], off = self.alloc_off[j]
        nodes = np.empty(c, dtype=np.int32)
        tasks = np.empty(c, dtype=np.int32)
        cdef int32_t[::1] vn = nodes
        cdef int32_t[::1] vt = tasks
        for a in range(c):
            vn[a] = self.alloc[off + a].node_idx
            vt[a] = self.alloc[off + a].n_tasks
        return nodes, tasks

    def _copy_i64(self, int which):
        out = np.empty(self.n_jobs, dtype=np.int64)
        cdef int64_t[::1] v = out
        cdef int64_t* src = self.start_s if which == 0 else (self.end_s if which == 1 else self.reserved_s)
        if self.n_jobs:
            memcpy(&v[0], src, self.n_jobs * sizeof(int64_t))
        return out

    def start_times(self):
        """Start time per job slot, -1 if never started (a copy)."""
        return self._copy_i64(0)

    def end_times(self):
        """End time per job slot, -1 if not ended (a copy)."""
        return self._copy_i64(1)

    def reservations(self):
        """Conservative reservation per slot as of the last pass, -1 none (a copy)."""
        if self.backfill == BF_CONSERVATIVE and not self.resv_complete:
            if self._complete_reservations() != 0:
                raise MemoryError()
        return self._copy_i64(2)

    def state_of(self, int j):
        """JOB_STATES code of one job (no copy of the table)."""
        self._check_idx(j)
        return self.job_state[j]

    def job_states(self):
        out = np.empty(self.n_jobs, dtype=np.int8)
        cdef int8_t[::1] v = out
        if self.n_jobs:
            memcpy(&v[0], self.job_state, self.n_jobs * sizeof(int8_t))
        return out

    def free_per_node(self):
        """Free resources per node, shape (n_nodes, N_RES) (a copy)."""
        out = np.empty((self.n_nodes, N_RES), dtype=np.int64)
        cdef int64_t[:, ::1] v = out
        if self.n_nodes:
            memcpy(&v[0, 0], self.node_free, self.n_nodes * N_RES * sizeof(int64_t))
        return out

    def states_of_nodes(self):
        out = np.empty(self.n_nodes, dtype=np.int8)
        cdef int8_t[::1] v = out
        if self.n_nodes:
            memcpy(&v[0], self.node_state, self.n_nodes * sizeof(int8_t))
        return out

    def free_total(self):
        return np.array([self.total_free[r] for r in range(N_RES)], dtype=np.int64)

    def shadow(self):
        """EASY: (head slot, shadow time, extra resources) of the last full pass."""
        return (self.head_idx, None if self.shadow_s == NEVER else self.shadow_s,
                np.array([self.extra[r] for r in range(N_RES)], dtype=np.int64))


include "estimates.pxi"
include "replay.pxi"
include "swf.pxi"
