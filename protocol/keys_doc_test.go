package protocol

import (
	"slices"
	"strings"
	"testing"

	"morag-gpu/internal/testenv"
)

// TestKeysMatchDoc: every Celery and kombu key and channel pattern in
// docs/redis-keys.md has a builder in keys.go and every builder is in the
// document, so neither can drift. The builders get the document's
// placeholders as arguments; kombu's separator is written SEP there and
// the database {db}.
func TestKeysMatchDoc(t *testing.T) {
	const db = 7
	b := NewBroker(nil, BrokerOptions{})
	var built []string
	for _, q := range []string{"<queue>", "<reply_id>"} {
		for _, pri := range []int{0, 3, 6, 9} {
			built = append(built, b.QueueForPriority(q, pri))
		}
	}
	built = append(built,
		bindingKey("<exchange>"), unackedKey, unackedIndexKey, unackedMutexKey,
		deliveryCountKey("<delivery_tag>"), defaultDeadLetterKey,
		taskMetaKey("<task_id>"), groupMetaKey("<group_id>", ""),
		groupMetaKey("<group_id>", ".j"), groupMetaKey("<group_id>", ".t"), groupMetaKey("<group_id>", ".s"),
		eventChannel(db, "<group>.<event>"), bindingKey(eventExchange),
		fanoutChannel(db, pidboxExchange), bindingKey(pidboxExchange), bindingKey(pidboxReplyExchange),
	)
	for i, k := range built {
		k = strings.ReplaceAll(k, sep, "SEP")
		built[i] = strings.Replace(k, fanoutPrefix(db), "/{db}.", 1)
	}
	slices.Sort(built)
	built = slices.Compact(built)

	var doc []string
	for _, section := range []string{"Task queues", "Results", "Events and remote control"} {
		doc = append(doc, testenv.RedisKeyDoc(t, section)...)
	}
	for _, k := range doc {
		if !slices.Contains(built, k) {
			t.Errorf("docs/redis-keys.md lists %q, which no builder in keys.go makes", k)
		}
	}
	for _, k := range built {
		if !slices.Contains(doc, k) {
			t.Errorf("keys.go builds %q, which docs/redis-keys.md does not list", k)
		}
	}
}
