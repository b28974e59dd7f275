"""Server life cycle for ``panel serve apps/``: warm start, sessions that give their memory back, quick shutdown.

Bokeh runs ``on_server_loaded`` once per process at start, so the first visitor does not wait for imports,
numba compilation or the default run's columns (they land in the shared per-process cache).

``on_session_destroyed``: a closed page must not stay reachable from process-wide objects; three paths kept
every page, its views and their data alive (20 closed sessions kept ~350 MB, benchmarks/bench_sessions.py):
HoloViews' class-wide stream-callback table (the page's own cleanup never reached its plots: when a session ends,
the page model's list of children is already empty), the ``busy`` reference each ``Page`` keeps on the global
``pn.state``, and ``pn.state``'s per-document tables, whose values refer back to their (weak) key.

With ``--num-procs N`` Bokeh forks N server processes that run ``on_server_loaded`` each; the parent only waits
for them, and nothing told them when it was killed (they kept serving). Each now asks the kernel for a SIGKILL when
its parent dies (``t3vis.processes.die_with_parent``): not a SIGTERM, which a forked server was once seen to ignore
(Bokeh's handler sits on an asyncio loop; two SIGTERMs later it still served), and with its parent gone there is
nothing left to shut down gently for.

``on_server_unloaded`` runs when the server stops (SIGTERM, Ctrl-C). Tearing down a heap of this size took the
interpreter 2-6 s, mostly in the final garbage collections; freezing the heap first skips them. A watchdog then
ends the process if anything (a non-daemon thread, a hung C call) still holds it up, printing every thread's stack.
"""

import ctypes
import faulthandler
import gc
import logging
import signal

log = logging.getLogger("t3vis.apps")
READY = "t3vis explorer ready"
#: Seconds the process may take to exit once the server has stopped.
EXIT_DEADLINE = 3.0


def on_server_loaded(server_context):
    from bokeh.document import Document
    from tornado.process import task_id

    if task_id() is not None:  # a process forked by --num-procs: end with the server that forked it
        from t3vis.processes import die_with_parent

        die_with_parent(sig=signal.SIGKILL)

    from t3vis.ui.explorer import Explorer
    from t3vis.ui.runs import app_runs_dir, default_run
    from t3vis.ui.warmup import warm_up

    warm_up()
    root = app_runs_dir()
    try:
        # one throwaway page over the default run: loads its columns into the shared cache and exercises every
        # view's first render (plotting backend, models) so the first visitor gets a warm server
        if default_run(root) is not None:
            page = Explorer(runs_dir=root).__panel__()
            doc = Document()
            page.get_root(doc)
            cleanup_views(doc)  # the page is dropped: nothing process-wide may keep it
            release(page)
    except Exception:  # a bad run must not stop the server; the page explains it
        log.exception("warming up on the default run failed")
    finally:
        print(f"{READY} (runs directory {root})", flush=True)


def on_session_destroyed(session_context):
    doc = session_context._document
    cleanup_views(doc)
    # pages rendered into this document, or into none any more (Panel dropped it already)
    released = release_state_watchers(lambda owner: doc in (getattr(owner, "_documents", None) or {doc: None}))
    forget_document(doc)
    gc.collect()
    _trim_malloc()
    log.debug("session %s destroyed; %d process-wide watcher(s) released", session_context.id, released)


def on_server_unloaded(server_context):
    gc.freeze()  # the heap dies with the process: skip the interpreter's final collections over it
    faulthandler.dump_traceback_later(EXIT_DEADLINE, exit=True)


def release(obj) -> None:
    """Drop the watchers ``obj``'s parameter references keep on process-wide objects (``pn.state``)."""
    release_state_watchers(lambda owner: owner is obj)


def release_state_watchers(belongs) -> int:
    """Unwatch every ``pn.state`` watcher that syncs a reference of an object for which ``belongs(obj)``."""
    from panel.io.state import state

    released = 0
    for by_kind in list(state._param__private.watchers.values()):
        for watchers in by_kind.values():
            for watcher in list(watchers):
                owner = getattr(getattr(watcher.fn, "__self__", None), "self", None)  # Parameters._sync_refs
                if getattr(watcher.fn, "__name__", "") == "_sync_refs" and owner is not None and belongs(owner):
                    state.param.unwatch(watcher)
                    released += 1
    return released


def cleanup_views(doc) -> None:
    """Clean up every view Panel rendered into ``doc`` (its HoloViews plots unregister their stream callbacks).

    Panel cleans up the object that was made servable, but a page with a design wrapper is rendered through the
    wrapper, which nobody cleans: its plots stayed in HoloViews' process-wide callback table.
    """
    from panel.io.state import state

    for ref, (view, root, view_doc, _comm) in list(state._views.items()):
        if view_doc is doc:
            for part in view.select():  # the page's own cleanup did not reach its children here
                try:
                    part._cleanup(root)
                except Exception:  # one part's failure must not keep the rest of the page alive
                    log.warning("cleaning up %s failed", type(part).__name__, exc_info=True)
            state._views.pop(ref, None)


def forget_document(doc) -> None:
    """Drop ``doc`` from every per-document table of ``pn.state``.

    They are weak-keyed, but a value that refers back to its document (the ``BrowserInfo`` model syncing into it)
    keeps the key alive for good, and with it every model of the page.
    """
    from weakref import WeakKeyDictionary

    from panel.io.state import state

    for table in {id(v): v for v in [*vars(type(state)).values(), *vars(state).values()]}.values():
        if isinstance(table, WeakKeyDictionary):
            table.pop(doc, None)


def _trim_malloc() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS shows what sessions hold."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
