package protocol

import "strconv"

// Every Redis key and pub/sub channel name Celery and kombu use is built in
// this file (docs/redis-keys.md lists them, and keys_doc_test.go checks the
// two against each other). The names are Celery's and kombu's, shared with
// Python peers, so they are not ours to change. Builders return the name
// without global_keyprefix: the Broker, Backend, Mailbox, Control and
// event dispatcher put their prefix in front.

// sep separates a queue name from its priority band and the parts of a
// binding, as kombu's Channel.sep does.
const sep = "\x06\x16"

// DefaultQueue is Celery's task_default_queue.
const DefaultQueue = "celery"

// kombu's Redis transport keys (kombu/transport/redis.py Channel
// attributes), and the two this package adds beside them.
const (
	unackedKey      = "unacked"
	unackedIndexKey = "unacked_index"
	unackedMutexKey = "unacked_mutex"
	// bindingKeyPrefix is Channel.keyprefix_queue without its "%s".
	bindingKeyPrefix = "_kombu.binding."
	// deliveryCountPrefix + delivery tag counts the unfinished starts of a
	// message on Go workers (poison-message detection; not a kombu key).
	deliveryCountPrefix = "celery.deliveries."
	// defaultDeadLetterKey is BrokerOptions.DeadLetterKey's default: the
	// list undecodable messages are moved to (Python drops them).
	defaultDeadLetterKey = "celery.deadletter"
)

// Celery's result backend keys (BaseKeyValueStoreBackend).
const (
	// taskKeyPrefix is task_keyprefix.
	taskKeyPrefix = "celery-task-meta-"
	// groupKeyPrefix is group_keyprefix: chord bookkeeping keys hang off
	// it too.
	groupKeyPrefix = "celery-taskset-meta-"
)

// kombu's fanout exchanges (events and remote control).
const (
	eventExchange       = "celeryev"
	pidboxExchange      = "celery.pidbox"
	pidboxReplyExchange = "reply.celery.pidbox"
)

// bandQueue is the list holding queue's messages of priority band (kombu's
// _q_for_pri for a band other than 0, which is the queue itself).
func bandQueue(queue string, band int) string { return queue + sep + strconv.Itoa(band) }

// bindingKey is the set of bindings of exchange.
func bindingKey(exchange string) string { return bindingKeyPrefix + exchange }

// bindingMember is the binding of a queue to the exchange named like it
// (routing key, pattern, queue), as Celery's automatic queues declare.
func bindingMember(queue string) string { return queue + sep + sep + queue }

// pidboxBinding is a worker's member of bindingKey(pidboxExchange).
func pidboxBinding(hostname string) string {
	return sep + sep + hostname + "." + pidboxExchange
}

// replyBinding is a control client's reply queue oid.reply.celery.pidbox,
// bound with routing key oid.
func replyBinding(oid string) (queue, binding string) {
	queue = oid + "." + pidboxReplyExchange
	return queue, oid + sep + sep + queue
}

// deliveryCountKey holds tag's unfinished start count.
func deliveryCountKey(tag string) string { return deliveryCountPrefix + tag }

// taskMetaKey is a task's result, and the channel its writes are
// published on.
func taskMetaKey(taskID string) string { return taskKeyPrefix + taskID }

// groupMetaKey is a group's saved result (suffix "") or one of its chord
// counters (".j" joined parts, ".t" size adjustment, ".s" chord size).
func groupMetaKey(groupID, suffix string) string { return groupKeyPrefix + groupID + suffix }

// fanoutPrefix is kombu's keyprefix_fanout, "/{db}.".
func fanoutPrefix(db int) string { return "/" + strconv.Itoa(db) + "." }

// fanoutChannel is the pub/sub channel of a fanout exchange on db.
func fanoutChannel(db int, exchange string) string { return fanoutPrefix(db) + exchange }

// eventChannel is the channel an event with routing key "<group>.<event>"
// goes to; routingKey may be a PSUBSCRIBE pattern.
func eventChannel(db int, routingKey string) string {
	return fanoutChannel(db, eventExchange) + "/" + routingKey
}
