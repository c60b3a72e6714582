# The free-capacity tree: which nodes can take one more task. Included by _core.pyx.
#
# Placement walks nodes in index order (first fit; best fit and spread score
# every candidate), and a job that fits in the free totals may still not fit
# node by node. Walking every node from the first one with a free core made a
# start cost grow with the node count: full nodes, and nodes whose leftover
# is too small for the job's tasks, were looked at one by one. This segment
# tree keeps, per resource, the most free on any UP node of each subtree
# (leaves: a node's free, -1 when it is not UP), so the next node that can
# take one task of a job is found in O(log n_nodes) steps, skipping the rest
# whole. It only prunes nodes that would take no task: the nodes visited, and
# their order, are those of the plain walk, so every decision is unchanged.


cdef int tree_init(ClusterState st) noexcept nogil:
    """Allocate and fill the tree from the node table. 0, or -1 when out of memory."""
    cdef int size = 1, i, r
    while size < st.n_nodes:
        size <<= 1
    st.tree_size = size
    st.tree = <int64_t*>malloc(2 * size * N_RES * sizeof(int64_t))
    if st.tree == NULL:
        return -1
    for i in range(2 * size * N_RES):
        st.tree[i] = -1
    for i in range(st.n_nodes):
        _tree_leaf(st, i)
    for i in range(size - 1, 0, -1):
        for r in range(N_RES):
            st.tree[i * N_RES + r] = max(st.tree[2 * i * N_RES + r], st.tree[(2 * i + 1) * N_RES + r])
    return 0


cdef inline void _tree_leaf(ClusterState st, int n) noexcept nogil:
    cdef int r
    cdef int64_t* leaf = &st.tree[(st.tree_size + n) * N_RES]
    for r in range(N_RES):
        leaf[r] = st.node_free[n * N_RES + r] if st.node_state[n] == NODE_UP else -1


cdef void tree_update(ClusterState st, int n) noexcept nogil:
    """Node ``n``'s free resources or state changed: refresh its leaf and the maxima above."""
    cdef int i, r
    cdef int64_t m
    if st.tree == NULL:
        return
    _tree_leaf(st, n)
    i = (st.tree_size + n) >> 1
    while i >= 1:
        for r in range(N_RES):
            m = max(st.tree[2 * i * N_RES + r], st.tree[(2 * i + 1) * N_RES + r])
            st.tree[i * N_RES + r] = m
        i >>= 1


cdef inline int _tree_holds(ClusterState st, int i, const int64_t* per) noexcept nogil:
    """Tree entry ``i`` has at least ``per`` on every resource (for a subtree: each
    resource's best node may differ, so a subtree that holds may still have no fit)."""
    cdef int r
    for r in range(N_RES):
        if st.tree[i * N_RES + r] < per[r]:
            return 0
    return 1


cdef int _tree_first(ClusterState st, int i, const int64_t* per) noexcept nogil:
    """The leftmost node under entry ``i`` that can take one task of ``per``, or -1."""
    cdef int found
    if i >= st.tree_size:
        return i - st.tree_size if _tree_holds(st, i, per) else -1
    if _tree_holds(st, 2 * i, per):
        found = _tree_first(st, 2 * i, per)
        if found >= 0:
            return found
    if _tree_holds(st, 2 * i + 1, per):
        return _tree_first(st, 2 * i + 1, per)
    return -1


cdef int tree_next(ClusterState st, int lo, const int64_t* per) noexcept nogil:
    """The first UP node at or after ``lo`` with room for one task of ``per`` (free
    >= per on every resource), or -1."""
    cdef int i, found
    if lo >= st.n_nodes:
        return -1
    i = st.tree_size + lo
    while True:
        if _tree_holds(st, i, per):
            found = _tree_first(st, i, per)
            if found >= 0:
                return found
        while i & 1:  # a right child: its parent's range is done
            i >>= 1
        if i == 0:
            return -1
        i += 1
