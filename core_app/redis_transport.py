# mypy: disable-error-code="no-untyped-call"
"""kombu's Redis transport, made to survive a Redis restart or a killed busy worker.

``broker_transport`` points here for ``redis://`` and ``rediss://`` brokers
(:func:`core_app.celery_app.celery_init_app`); everything else is kombu's
``kombu.transport.redis``, unchanged.

What goes wrong with the stock transport (kombu 5.7.0, redis-py 8) when Redis restarts
while a worker holds unacknowledged messages (every busy worker does: the task it runs
and the ones it prefetched):

1. Celery sees the connection error and calls ``Connection.collect()``, which closes the
   consumer's channel. ``Channel.close()`` first reads the reply of the ``BRPOP`` in
   flight; the connection is gone, so that raises, and the close stops before it has
   done anything. kombu swallows the error and then detaches the transport from its
   connection (``transport.client = None``).
2. Celery then calls ``Connection.close()``, which closes the same channel again. This
   time the close goes on to put the unacknowledged messages back in their queue; that
   needs a Redis connection pool, and building one reads ``transport.client.hostname``:
   ``AttributeError: 'NoneType' object has no attribute 'hostname'``. Celery does not
   expect an ``AttributeError`` there: the worker logs ``Unrecoverable error`` and exits.
3. When the close does get that far with Redis still down, putting the messages back
   fails, and they are never tried again; acknowledgements of tasks that finish while
   Redis is down are lost too: those messages wait in Redis's ``unacked`` hash for the
   whole visibility timeout.

And whatever Redis does: ``BRPOP`` removes a message from its queue before the worker
records it as unacknowledged, so a worker killed in between (or a reply lost with its
connection) loses the message for good.

Here a channel remembers its connection's address (closing does not make it forget
where Redis is), a lost ``BRPOP`` reply does not stop the close, and what could not be
told to Redis while it was down (messages to put back, acknowledgements) is done as soon
as this process connects again. Messages of tasks still running in this worker are left
alone: their tasks acknowledge them when they finish (or, if this worker dies first, the
visibility timeout hands them out again), so a restart does not run them twice. And a
message is taken from its queue and recorded as unacknowledged in one step, by a Lua
script (:data:`TAKE`); an idle worker waits for the next one with ``BLMOVE`` of the queue
onto itself, which leaves it there (Redis 6.2 or later, else kombu's ``BRPOP``).

The same ``AttributeError`` from ``_connparams`` was reported against kombu 3 on another
path (closing a broadcast channel): https://github.com/celery/kombu/issues/582; putting
unacknowledged messages back after a reconnect was requested in
https://github.com/celery/celery/issues/1307 and closed unimplemented.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from queue import Empty
from time import monotonic, time
from types import SimpleNamespace
from typing import Any

from kombu import connection as kombu_connection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from kombu.utils.objects import cached_property

log = logging.getLogger(__name__)

#: What this process could not tell Redis because Redis was down, by broker address and
#: unacked key: delivery tag -> ``ACK`` (remove it from the ``unacked`` hash), or the
#: message to put back in its queue (None: Redis has it in that hash). Done when a
#: channel to that Redis opens.
_pending: dict[tuple[str, str], dict[str, Any]] = {}
_pending_lock = threading.Lock()
# A pool child does not own its parent's messages.
os.register_at_fork(after_in_child=_pending.clear)
ACK = "ack"
#: In ``_pending``, for a take key (see :data:`TAKE`): its message may have been taken
#: by a take whose reply was lost; put it back unless this worker runs it.
TAKEN = "taken"


def _running_tags() -> set[str]:
    """Delivery tags of the tasks this worker is running (none outside a worker)."""
    from celery.worker import state

    if state.should_stop is not None or state.should_terminate is not None:
        return set()  # shutting down: what runs now is cut short, put everything back
    return {request.message.delivery_tag for request in tuple(state.active_requests)}


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        """Record a message taken from its queue as unacknowledged (unless the script
        that took it did). If Redis went away meanwhile, the message exists only here:
        keep it to put it back."""
        if self.channel.recorded.pop(delivery_tag, None):
            virtual.QoS.append(self, message, delivery_tag)
            return
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors:
            info = message.delivery_info
            entry = [message._raw, info["exchange"], info["routing_key"]]
            self.channel.defer({delivery_tag: entry})
            raise

    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)
        except self.channel.connection_errors:
            self.channel.defer({delivery_tag: ACK})
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except self.channel.connection_errors:
            self.channel.defer({delivery_tag: None if requeue else ACK})
            virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> list[Any]:
        """Put this channel's unacknowledged messages back in their queues.

        Those of tasks still running are left to be acknowledged by their task; what
        Redis cannot take now is done when this process next connects.
        """
        running = _running_tags()
        tags = [tag for tag in self._delivered if tag not in running]
        self._delivered.clear()
        self.channel.put_back(dict.fromkeys(tags), client)
        return []


#: Takes the first message of the lists in KEYS[4:] and records it as unacknowledged
#: (KEYS[1], hash) delivered now (ARGV[1]; KEYS[2], index), in one step: a worker killed
#: after Redis handed it a message leaves the message in the hash, not nowhere. KEYS[3]
#: (the channel's take key) keeps the tag for ARGV[2] s, in case the reply is lost. The
#: message leaves its list last, so a write Redis refuses (out of memory) takes nothing.
TAKE = """
for i = 4, #KEYS do
    local item = redis.call('LINDEX', KEYS[i], -1)
    if item then
        local ok, message = pcall(cjson.decode, item)
        local properties = ok and type(message) == 'table' and message['properties']
        local tag = type(properties) == 'table' and properties['delivery_tag']
        if type(tag) == 'string' then
            local info = properties['delivery_info'] or {}
            redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'])
                .. ',' .. cjson.encode(info['routing_key']) .. ']')
            redis.call('ZADD', KEYS[2], ARGV[1], tag)
            redis.call('SET', KEYS[3], tag, 'EX', ARGV[2])
        else
            tag = ''  -- not a kombu message: taken as BRPOP would
        end
        redis.call('RPOP', KEYS[i])
        return {KEYS[i], item, tag}
    end
end
return false
"""


class Channel(kombu_redis.Channel):
    QoS = QoS
    #: Take messages with :data:`TAKE`; off with a key prefix, no-ack consumers, or a
    #: Redis without BLMOVE (before 6.2): kombu's BRPOP then.
    atomic_take = True
    #: After a take found nothing: wait (BLMOVE of a queue onto itself) before the next.
    _idle = False

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        # The transport forgets its connection when it is closed; the channel must not.
        self._conninfo = connection.client
        #: Delivery tags :data:`TAKE` recorded, not yet handed to QoS.append.
        self.recorded: dict[str, bool] = {}
        self._take_key = f"core_app:take:{uuid.uuid4().hex}"
        super().__init__(connection, *args, **kwargs)
        with _pending_lock:
            deferred = _pending.pop(self._pending_key, {})
        if deferred:
            self._catch_up(deferred)

    def _catch_up(self, deferred: dict[str, Any]) -> None:
        """Do what Redis could not take while it was down (see ``_pending``)."""
        takes = [key for key, what in deferred.items() if what == TAKEN]
        try:
            with self.conn_or_acquire() as client:
                taken = [bytes_to_str(tag) for tag in client.mget(takes) if tag] if takes else []
                if takes:
                    client.delete(*takes)
        except self.connection_errors:
            self.defer(deferred)
            return
        running = _running_tags()
        todo = {t: m for t, m in deferred.items() if m != TAKEN and (m == ACK or t not in running)}
        todo.update((tag, None) for tag in taken if tag not in running and tag not in todo)
        if self.put_back(todo) == len(todo):
            log.warning("Redis is back: did what it could not take before (%d).", len(todo))

    @cached_property
    def _pending_key(self) -> tuple[str, str]:
        return (self._conninfo.as_uri(), self.unacked_key)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is not None and transport.client is not None:
            return dict(super()._connparams(asynchronous=asynchronous))
        # A closed channel (an acknowledgement of a task that ran across a reconnect,
        # or putting messages back) still reaches the same Redis.
        self.connection = SimpleNamespace(
            client=self._conninfo, default_port=Transport.default_port, cycle=None
        )
        try:
            return dict(super()._connparams(asynchronous=asynchronous))
        finally:
            self.connection = transport

    def _takes(self) -> bool:
        return bool(
            self.atomic_take
            and self.ack_emulation
            and not self.global_keyprefix
            and not self.no_ack_consumers
        )

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Ask Redis for the next message: a :data:`TAKE`, or, when the last one found
        nothing, a wait for one (kombu's BRPOP takes the message before it is recorded:
        a worker killed in between lost it)."""
        if not self._takes():
            super()._brpop_start(timeout)
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        if self._idle:
            # Returns once the first queue has a message (left in place), or after the
            # timeout: other lists of the cycle (priorities, other queues) wait that long.
            wait = self.brpop_timeout if len(queues) == 1 else min(self.brpop_timeout, 0.2)
            command = ["BLMOVE", keys[0], keys[0], "RIGHT", "RIGHT", wait]
        else:
            own = [self.unacked_key, self.unacked_index_key, self._take_key]
            timeout = int(self.visibility_timeout)
            command = ["EVAL", TAKE, len(keys) + len(own), *own, *keys, time(), timeout]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        if not self._takes():
            return bool(super()._brpop_read(**options))
        waited, self._idle = self._idle, False
        connection = self.client.connection
        try:
            try:
                reply = self.client.parse_response(
                    connection, "BLMOVE" if waited else "EVAL", **options
                )
            except self.connection_errors:
                connection.disconnect()
                if not waited:  # the take may have happened: its reply is lost
                    self.defer({self._take_key: TAKEN})
                raise
            except self.ResponseError as exc:
                if not waited:
                    raise
                log.warning("Taking messages with BRPOP: %s", exc)  # Redis < 6.2: no BLMOVE
                self.atomic_take = False
                raise Empty() from exc
            if waited or not reply:
                self._idle = not waited
                raise Empty()
            dest, item, tag = (bytes_to_str(part) for part in reply)
            queue = dest.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            if tag:
                self.recorded[tag] = True
            self.connection._deliver(loads(item), queue)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def close(self) -> None:
        if self._in_poll:
            try:
                self._brpop_read()
            except Empty:
                pass
            except self.connection_errors:
                pass  # the reply is lost with the connection; go on closing
        super().close()

    def put_back(self, messages: dict[str, Any], client: Any = None) -> int:
        """Put messages back at the head of their queue: from the ``unacked`` hash when
        Redis has them there, else the copy given (a message Redis never recorded);
        ``ACK`` only removes a message from that hash. What Redis cannot take now is
        deferred to the next connection; returns how many were done."""
        qos = self.qos

        def put_back_one(tag: str, message: Any) -> Any:
            def transaction(pipe: Any) -> None:
                stored = None if message == ACK else pipe.hget(qos.unacked_key, tag)
                pipe.multi()
                qos._remove_from_indices(tag, pipe)
                entry = loads(bytes_to_str(stored)) if stored else message
                if entry and entry != ACK:
                    payload, exchange, routing_key = entry
                    self._do_restore_message(payload, exchange, routing_key, pipe)

            return transaction

        tags = list(messages)
        for number, tag in enumerate(tags):
            try:
                with self.conn_or_acquire(client) as redis_client:
                    redis_client.transaction(put_back_one(tag, messages[tag]), qos.unacked_key)
            except self.connection_errors:
                self.defer({t: messages[t] for t in tags[number:]})
                return number
        return len(tags)

    def defer(self, messages: dict[str, Any]) -> None:
        """Keep what Redis could not take (see ``_pending``) for the next connection."""
        with _pending_lock:
            pending = _pending.setdefault(self._pending_key, {})
            for tag, message in messages.items():
                pending[tag] = message or pending.get(tag)
        log.warning(
            "Redis is unreachable: %d acknowledgement(s) or unacknowledged message(s) "
            "wait for this worker to reconnect.",
            len(messages),
        )


class Transport(kombu_redis.Transport):
    Channel = Channel


#: Where ``broker_transport`` points: log lines and ``celery inspect`` still say ``redis://``.
NAME = f"{__name__}:Transport"
kombu_connection.resolve_aliases.setdefault(NAME, "redis")
