# cython: language_level=3
"""Declarations of the scheduling kernel's state.

Every decision of htcsim (simulator and live agent) is made by the functions
of ``_core.pyx`` over the C arrays declared here. Invariants, checked by the
tests against a pure-Python reference:

* ``node_free[n, r] <= node_cap[n, r]`` and ``>= 0`` for every node and resource;
* ``total_free[r]`` is the sum of ``node_free[n, r]`` over nodes that are UP;
* the live queue entries ``q[q_begin:q_end]`` whose ``job_idx >= 0`` are
  exactly the PENDING jobs, sorted by (key, submit_s, job_id, job_idx);
  entries with ``job_idx == -1`` are tombstones that keep their key so the
  array stays sorted for binary search;
* ``run[0:n_run]`` holds exactly the RUNNING jobs, sorted by
  (end_req_s, job_idx), where ``end_req_s = start_s + walltime_s``.
"""

from libc.stdint cimport int8_t, int32_t, int64_t

cdef enum:
    N_RES = 4          # resources per node and per task: cores, mem_mib, gpus, scratch_mib
    RES_CORES = 0
    RES_MEM = 1
    RES_GPUS = 2
    RES_SCRATCH = 3

# Queue order.
cdef enum:
    ORDER_FCFS = 0      # (submit_s, job_id)
    ORDER_SJF = 1       # (walltime_s, submit_s, job_id)
    ORDER_PRIORITY = 2  # (-priority, submit_s, job_id); priority supplied by the caller
    ORDER_MULTIFACTOR = 3  # (-priority, ...); priority computed here (age, size, fairshare, QoS, nice)

# Fairshare algorithm.
cdef enum:
    FS_CLASSIC = 0      # 2^(-effective usage / normalized shares)
    FS_FAIR_TREE = 1    # rank of the user in a depth-first walk of groups then users by level fairshare

# Accounting levels (limits, usage) and limit/usage columns.
cdef enum:
    LVL_USER = 0
    LVL_GROUP = 1
    LVL_QOS = 2
    N_LVL = 3
    LIM_JOBS = 0        # running jobs
    LIM_CORES = 1       # cores held by running jobs
    LIM_GPUS = 2        # GPUs held by running jobs
    LIM_QUEUED = 3      # pending jobs considered (the rest wait with the limit as reason)
    N_LIM = 4
    N_USE = 3           # usage columns: running jobs, cores, GPUs

# Dependency kinds.
cdef enum:
    DEP_AFTERANY = 0
    DEP_AFTEROK = 1
    DEP_AFTERNOTOK = 2

# Owner kinds of an advance reservation (same numbering as the levels).
cdef enum:
    OWNER_USER = 0
    OWNER_GROUP = 1
    OWNER_QOS = 2

# Backfill mode.
cdef enum:
    BF_NONE = 0
    BF_EASY = 1
    BF_CONSERVATIVE = 2

# Placement strategy.
cdef enum:
    PLACE_FIRST_FIT = 0  # nodes in index order
    PLACE_BEST_FIT = 1   # pack: the node left with the fewest free cores
    PLACE_SPREAD = 2     # balance: the node with the most free cores
    PLACE_CONS_TRES = 3  # Slurm's cons_tres: tightest run of nodes, then tightest node

# Job states as the kernel sees them (a driver refines ENDED into completed,
# failed, timeout...).
cdef enum:
    JS_NEW = 0          # registered, not yet submitted
    JS_PENDING = 1
    JS_HELD = 2
    JS_RUNNING = 3
    JS_ENDED = 4
    JS_CANCELLED = 5

# Why a job is pending (as Slurm's Reason).
cdef enum:
    WHY_NONE = 0
    WHY_PRIORITY = 1    # a job ahead of it in the queue waits for resources
    WHY_RESOURCES = 2   # first in line; waits for resources to free up
    WHY_DEPENDENCY = 3
    WHY_BEGIN_TIME = 4
    WHY_QOS_LIMIT = 5
    WHY_USER_LIMIT = 6
    WHY_GROUP_LIMIT = 7
    WHY_RESERVATION = 8
    WHY_NODE_DOWN = 9
    WHY_HELD = 10
    WHY_NOT_PENDING = 11
    WHY_BACKFILL_DEPTH = 12  # beyond the backfill depth limit

# Node states. An UP node is idle (no task) or allocated; a DRAINING node takes
# no new task and goes OFF when its last task ends; OFF nodes are not
# provisioned (the autoscaler's pool) and cost nothing.
cdef enum:
    NODE_UP = 0
    NODE_BOOTING = 1
    NODE_DRAINING = 2
    NODE_DOWN = 3
    NODE_OFF = 4
    N_NODE_STATES = 5

# What happens to a job whose node fails.
cdef enum:
    FAIL_REQUEUE = 0    # back to the queue (up to max_retries times), from its last checkpoint
    FAIL_END = 1        # ends, failed (as Slurm's NODE_FAIL)

# Pass return codes (negative: failure, reported without raising in nogil code).
cdef enum:
    PASS_OK = 0
    PASS_NO_MEMORY = -1

ctypedef struct JobSpec:
    int64_t job_id          # identity (from the source); ties are broken on it
    int64_t submit_s        # submit time; also the FCFS key
    int64_t walltime_s      # requested time: reservation length and kill limit (>= 0)
    int64_t per_task[4]     # resources per task, indexed by RES_*
    int32_t n_tasks         # task count (>= 1)
    int32_t user_idx        # dense user index (-1 unknown): fairshare, limits, nice
    int32_t group_idx       # dense group index (-1 unknown): fairshare tree, limits
    int32_t qos_idx         # QoS table index (-1: none): QoS factor and limits
    int32_t part_idx        # partition (0 when the cluster has one): the nodes it may use
    double priority         # ORDER_PRIORITY / ORDER_MULTIFACTOR key; larger runs first

ctypedef struct QEntry:
    double key              # primary sort key (0 for FCFS)
    int64_t submit_s
    int64_t job_id
    int32_t job_idx         # -1: tombstone
    int32_t _pad

ctypedef struct RunEntry:
    int64_t end_req_s       # start + walltime: when the job is killed at the latest
    int32_t job_idx
    int32_t _pad

cdef enum:
    PROFILE_BLOCK = 256  # segments per profile block

ctypedef struct ProfileBlock:
    int n                           # segments in use (>= 1 once created)
    int64_t add[4]                  # lazy amount added to every segment's free
    int64_t lo[4]                   # min of the stored free over the segments
    int64_t hi[4]                   # upper bound of the max stored free (values only fall)
    int64_t t[256]                  # segment start times, increasing
    int64_t f[1024]                 # stored free, PROFILE_BLOCK x N_RES

ctypedef struct Profile:
    ProfileBlock* blocks            # pool, indexed by block id
    int n_blocks
    int cap_blocks
    int32_t* order                  # block ids in time order
    int cap_order

ctypedef struct DepEdge:
    int64_t delay_s         # think time after the parent ends
    int32_t child
    int32_t next            # next edge of the same parent, -1 ends the list
    int32_t kind            # DEP_*
    int32_t _pad

ctypedef struct TimeHeap:   # binary min-heap of (time, job slot)
    int64_t* t
    int32_t* j
    int n
    int cap

ctypedef struct AdvanceResv:
    int64_t start_s
    int64_t end_s
    int64_t cap[4]          # capacity of its nodes, summed
    int32_t owner_kind      # OWNER_*
    int32_t owner_idx
    int8_t* on_node         # n_nodes flags

ctypedef struct JobFifo:   # jobs in the order they became eligible (stale entries skipped)
    int32_t* j
    int64_t* t
    int head
    int n
    int cap

ctypedef struct AllocEntry:
    int32_t node_idx
    int32_t n_tasks


cdef class ClusterState:
    # --- policy knobs (set by configure) ---
    cdef int order
    cdef int backfill
    cdef int placement
    cdef int bf_depth                  # 0: unlimited; else max queued jobs examined per pass

    # --- accounting per user, group and QoS: usage of running jobs and limits ---
    cdef int n_ent[3]                  # entities per level
    cdef int64_t* ent_use[3]           # n_ent * N_USE
    cdef int64_t* ent_lim[3]           # n_ent * N_LIM, 0: no limit
    cdef int32_t* ent_seen[3]          # pending jobs met by the current queue walk
    cdef int64_t def_lim[3][4]         # limits of entities created later (users, groups)
    cdef int limits_on
    cdef int queued_limits_on

    # --- multifactor priority ---
    cdef double w_age, w_size, w_fs, w_qos
    cdef int64_t max_age_s
    cdef int favor_small
    cdef int64_t prio_interval_s
    cdef int64_t next_prio_s           # next recomputation
    cdef int64_t prio_phase_s          # recompute on a clock: phase + k * interval (-1: off)
    cdef double* qos_prio              # per QoS, normalized to [0, 1]
    cdef double* user_nice             # per user, subtracted from the priority
    cdef int64_t all_cores             # cores of every node (size factor)
    cdef public long long n_recomputes

    # --- fairshare ---
    cdef int fs_algo
    cdef double fs_half_life_s
    cdef double* user_share            # raw shares (default 1)
    cdef double* group_share
    cdef int32_t* user_group           # the group a user's usage counts in (its first job's)
    cdef double* user_usage            # decayed core-seconds as of usage_t
    cdef double* user_acc              # core-seconds of jobs that ended since usage_t
    cdef double* group_usage
    cdef double* user_fs               # fairshare factor from the last recomputation
    cdef int64_t usage_t
    cdef void* fs_keys                 # fair tree: users in the last walk order (re-sorted by insertion)
    cdef int fs_keys_n

    # --- starvation guard ---
    cdef int64_t starve_limit_s        # 0: off
    cdef int8_t* starved               # per job: promoted to the front, gets a reservation
    cdef JobFifo starve_fifo           # pending jobs in the order they became eligible

    # --- dependencies and holds ---
    cdef int32_t* dep_unmet            # parents not yet ended
    cdef int64_t* dep_ready            # earliest eligibility from ended parents (+ think time)
    cdef int8_t* dep_doomed            # a dependency can never be satisfied
    cdef int8_t* dep_cancelled         # cancelled because of it
    cdef int8_t* hold_why              # while HELD: WHY_DEPENDENCY, WHY_BEGIN_TIME or WHY_HELD
    cdef int8_t* end_ok                # ended successfully (afterok/afternotok)
    cdef int64_t* elig_s               # when the job entered the pending queue (age)
    cdef int32_t* requeues             # times the job was requeued (its node failed)
    cdef int64_t* lost_s               # run seconds lost to node failures (since the last checkpoint)
    cdef int64_t* ckpt_s               # checkpoint interval (0: none)
    cdef int64_t* done_s               # run seconds saved by checkpoints: not run again
    cdef int8_t* node_failed           # ended because its node failed (FAIL_END or out of retries)
    cdef int fail_mode                 # FAIL_*
    cdef int max_retries               # requeues allowed per job (-1: no limit)
    cdef int32_t* fail_hits            # jobs hit by the last node failure
    cdef int cap_fail_hits
    cdef int32_t* kid_head             # first DepEdge of each parent, -1 none
    cdef DepEdge* edges
    cdef int n_edges
    cdef int cap_edges
    cdef TimeHeap begin_heap           # held jobs waiting for their think time

    # --- advance reservations ---
    cdef AdvanceResv* resv
    cdef int n_resv
    cdef int cap_resv
    cdef int n_live_resv               # not yet ended at the last pass
    cdef int64_t cur_now               # time of the pass in progress

    # --- nodes ---
    cdef int n_nodes
    cdef int64_t* node_cap             # n_nodes * N_RES
    cdef int64_t* node_free            # n_nodes * N_RES
    cdef int8_t* node_state            # NODE_*
    cdef int64_t total_free[4]         # over UP nodes
    cdef int64_t total_cap[4]          # over UP nodes
    cdef int first_free_node           # no UP node below it has a free core
    cdef int64_t* tree                 # free-capacity tree (freetree.pxi): per resource, the
    cdef int tree_size                 # most free on an UP node of each subtree; leaves from tree_size
    cdef int32_t* node_tasks           # tasks placed on each node
    cdef int64_t* idle_since           # UP with no task since then; -1 otherwise
    cdef int64_t* ready_s              # BOOTING until then; -1 otherwise
    cdef int64_t* on_since             # provisioned (not OFF) since; -1 when OFF
    cdef int64_t* on_acc_s             # provisioned seconds of closed intervals
    cdef int n_in_state[5]             # nodes per NODE_* state
    cdef int n_busy_up                 # UP nodes with at least one task
    cdef int64_t run_cores             # cores held by running jobs
    cdef double on_rate                # price per hour of the provisioned nodes

    # --- node types and the autoscaler (one decision per pass, from the kernel) ---
    cdef int n_types
    cdef int32_t* node_type            # type of each node (nodes of a type are contiguous)
    cdef int32_t* type_first           # first node of each type
    cdef int32_t* type_end             # one past its last node
    cdef int64_t* type_cap             # n_types * N_RES: one node's capacity
    cdef double* type_price            # per node and hour
    cdef int32_t* type_prov            # provisioned (not OFF) nodes per type
    cdef int32_t* type_booting         # BOOTING nodes per type
    cdef int8_t* as_scaled             # the autoscaler manages this type
    cdef int32_t* as_min
    cdef int32_t* as_max
    cdef int64_t* as_last_s            # last action on the type (cooldown)
    cdef int64_t* as_demand            # scratch: n_types * N_RES
    cdef int32_t* as_room              # scratch: nodes the type may still add now
    cdef int8_t* as_full               # scratch: the demand gathered already fills the room
    cdef int as_on
    cdef int as_step                   # most nodes added per type and decision
    cdef int64_t as_wait_s             # pending demand waits this long before it counts
    cdef int64_t as_idle_s             # an idle node leaves after this long
    cdef int64_t as_boot_s             # boot delay (-1: live, UP when the node joins)
    cdef int64_t as_cooldown_s         # between two actions on one type
    cdef int64_t as_interval_s         # decisions only every this often (0: at every pass)
    cdef int64_t as_decide_s           # no decision before then
    cdef int as_skipped                # a pass since the last decision took none
    cdef int64_t as_up_next            # next time scale-up could act (wakeup)
    cdef int64_t as_down_next          # lower bound of the next time an idle node may leave
    cdef int as_down_rescan            # a type kept its idle nodes for waiting demand
    cdef int64_t boot_next             # lower bound of the earliest boot completion
    cdef JobFifo as_fifo               # pending jobs by eligibility (the demand that waited)
    cdef int32_t* as_booted            # nodes booted by the last decision
    cdef int n_as_booted
    cdef int cap_as_booted
    cdef int32_t* as_stopped           # nodes powered off by the last decision
    cdef int n_as_stopped
    cdef int cap_as_stopped
    cdef public long long n_boots
    cdef public long long n_shutdowns

    # --- partitions (disjoint node sets; one by default) ---
    cdef int n_part
    cdef int32_t* node_part            # partition of each node
    cdef int64_t* part_free            # n_part * N_RES over UP nodes (kept when n_part > 1)
    cdef int64_t* part_cap
    cdef int cur_part                  # partition of the pass (or query) in progress
    cdef int64_t* tf                   # free resources of cur_part (total_free when one partition)

    # --- jobs (slots, growable) ---
    cdef int n_jobs
    cdef int cap_jobs
    cdef JobSpec* jobs
    cdef int64_t* need                 # n_jobs * N_RES: per_task * n_tasks
    cdef int8_t* simple                # 1: one-core tasks, nothing else asked (aggregate fit is exact)
    cdef int8_t* job_state
    cdef int64_t* start_s              # -1 until started
    cdef int64_t* end_s                # -1 until ended
    cdef int64_t* reserved_s           # conservative reservation from the last pass, -1 none
    cdef int32_t* alloc_off
    cdef int32_t* alloc_cnt

    # --- allocations (pool of node/task pairs, compacted when mostly dead) ---
    cdef AllocEntry* alloc
    cdef int n_alloc
    cdef int cap_alloc
    cdef int live_alloc

    # --- pending queue ---
    cdef QEntry* q
    cdef int q_begin
    cdef int q_end
    cdef int q_cap
    cdef int n_pending
    cdef int n_tomb

    # --- running set: a sorted array with tombstones, plus an unsorted buffer of
    # recent starts, merged only when someone iterates in order (_run_sorted) ---
    cdef RunEntry* run
    cdef int n_run                     # running jobs (live entries of run and run_buf)
    cdef int run_len                   # entries of run, tombstones included
    cdef int cap_run
    cdef RunEntry* run_buf
    cdef int n_buf
    cdef int cap_buf
    cdef int32_t* run_pos              # per job: index in run, or -(k + 1) for run_buf[k]

    # --- decisions of the last pass ---
    cdef int32_t* started
    cdef int n_started
    cdef int cap_started

    # --- incremental pass state ---
    cdef int need_full_pass            # something changed that old queue entries could see
    cdef int head_idx                  # EASY: job holding the reservation, -1 none
    cdef QEntry head_entry
    cdef int64_t shadow_s
    cdef int easy_profile              # the last EASY pass used a profile (no shadow to build on)
    cdef int64_t extra[4]
    cdef QEntry* fresh                 # jobs submitted since the last pass (their queue keys)
    cdef int n_fresh
    cdef int cap_fresh
    cdef int64_t min_resv_s            # earliest reservation made by the last conservative pass

    # --- availability profile (conservative; estimates) ---
    cdef Profile prof
    cdef int resv_complete             # every pending job has its reservation from the last pass
    cdef int64_t last_pass_now
    cdef int64_t* suffix_min           # fewest cores asked from each queue position on
    cdef int cap_suffix

    # --- counters ---
    cdef public long long n_passes
    cdef public long long n_full_passes
    cdef public long long n_jobs_examined

    # --- internals (C-level; all nogil, failures are return codes) ---
    cdef int _grow_jobs(self, Py_ssize_t need) noexcept nogil
    cdef int _grow_ent(self, int lvl, int n) noexcept nogil
    cdef void _check_idx(self, int j) except *
    cdef void _entry_of(self, int j, QEntry* e) noexcept nogil
    cpdef int submit(self, int j, int64_t now) except -1
    cdef int _arrive(self, int j, int64_t now) noexcept nogil
    cdef int _submit(self, int j, int64_t now) noexcept nogil
    cdef int _queue_insert(self, int j) noexcept nogil
    cpdef int finish(self, int j, int64_t now, int ok=*) except -1
    cdef int _parent_done(self, int p, int64_t now) noexcept nogil
    cdef int _release_begin(self, int64_t now) noexcept nogil
    cdef int _promote_starved(self, int64_t now) noexcept nogil
    cdef int _node_usable(self, int n, int j) noexcept nogil
    cdef int _may_use(self, int n, int j) noexcept nogil
    cdef int _owner_resv(self, int j) noexcept nogil
    cdef int _in_part(self, int j) noexcept nogil
    cdef void _set_part(self, int p) noexcept nogil
    cdef int64_t* _free_of(self, int j) noexcept nogil
    cdef int _pass_partition(self, int64_t now) noexcept nogil
    cdef void _expire_resv(self, int64_t now) noexcept nogil
    cpdef int cancel(self, int j, int64_t now) except -1
    cdef int _upper_bound(self, const QEntry* e) noexcept nogil
    cdef int _find_pos(self, int j) noexcept nogil
    cdef void _tombstone(self, int pos) noexcept nogil
    cdef void _compact_queue(self) noexcept nogil
    cdef void _rekey_queue(self) noexcept nogil
    cdef int _run_insert(self, int j) noexcept nogil
    cdef void _run_remove(self, int j) noexcept nogil
    cdef int _run_sorted(self) noexcept nogil
    cdef int _fits_now(self, int j) noexcept nogil
    cdef int64_t _tasks_fit(self, int n, JobSpec* s, int64_t most) noexcept nogil
    cdef int _take_on_node(self, JobSpec* s, int n, int64_t k) noexcept nogil
    cdef int _pick_node(self, int j, int64_t rem, int64_t* k_out) noexcept nogil
    cdef int _cons_tres_run(self, int j, int64_t rem, int* last) noexcept nogil
    cdef int _start_cons_tres(self, int j) noexcept nogil
    cdef int _start(self, int j, int64_t now) noexcept nogil
    cdef int _commit_start(self, int j, int64_t now, int off, bint record) noexcept nogil
    cdef void _release(self, int j, int64_t now) noexcept nogil
    cdef void _compact_alloc(self) noexcept nogil
    cpdef int schedule(self, int64_t now) except -2
    cdef int _run_pass(self, int64_t now) noexcept nogil
    cdef int _pass_easy(self, int64_t now) noexcept nogil
    cdef int _limits_on(self) noexcept nogil
    cdef int _over_limit(self, int j) noexcept nogil
    cdef int _ent(self, int j, int lvl) noexcept nogil
    cdef int _visit_limit(self, int j) noexcept nogil
    cdef void _reset_seen(self) noexcept nogil
    cdef void _unsee(self, int j) noexcept nogil
    cdef int64_t _wakeup(self) noexcept nogil
    cdef int _fail_job(self, int j, int64_t now) noexcept nogil
    cdef int _fail_node(self, int node, int64_t now) noexcept nogil
    cdef void _free_types(self)
    cdef void _alloc_types(self, int n_types) except *
    cdef void _count_user(self, int j, int sign) noexcept nogil
    cdef int _pass_easy_profile(self, int64_t now, int head_pos, int examined) noexcept nogil
    cdef int _start_in_order(self, int64_t now, int* examined) noexcept nogil
    cdef int _try_backfill(self, int j, int64_t now, int pos) noexcept nogil
    cdef void _compute_shadow(self, int head, int64_t now) noexcept nogil
    cdef int _pass_conservative(self, int64_t now) noexcept nogil
    cdef int _reserve_or_start(self, int j, int64_t now, int pos) noexcept nogil
    cdef int _build_profile(self, int64_t now) noexcept nogil
    cdef int _build_profile_into(self, Profile* P, int64_t now) noexcept nogil
    cdef int _fill_suffix_min(self) noexcept nogil
    cdef int _complete_reservations(self) noexcept nogil
    cdef int _reserve_partition(self, int64_t now) noexcept nogil
