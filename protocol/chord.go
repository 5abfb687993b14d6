package protocol

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/gomodule/redigo/redis"
)

// groupKey is the Redis key of group gid's bookkeeping with suffix
// (".j" joined parts, ".t" size adjustment, ".s" chord size, "" the saved
// GroupResult).
func (b *Backend) groupKey(gid, suffix string) string {
	return b.prefix + groupMetaKey(gid, suffix)
}

// ChordPart is one finished header task of a chord.
type ChordPart struct {
	GroupID    string
	TaskID     string
	GroupIndex *int // nil: "+inf", as Python scores a part without index
	State      State
	// Result is the return value (SUCCESS) or the exception: a *TaskError
	// or error for FAILURE/REVOKED, encoded as Backend.Store does.
	Result any
}

// ChordPartResult is one joined part, decoded from the .j set.
type ChordPartResult struct {
	TaskID string
	State  State
	Result json.RawMessage
}

// Err is the part's exception when its state propagates (FAILURE,
// REVOKED), else nil.
func (p ChordPartResult) Err() *TaskError {
	if !p.State.propagates() {
		return nil
	}
	return decodeTaskError(p.State, p.Result)
}

// ChordJoin says whether a part completed its chord, and with what.
type ChordJoin struct {
	// Complete: this part was the last one; the caller must apply the body
	// (or fail it with ChordError) and then call ChordCleanup.
	Complete bool
	Ready    int
	Total    int // -1 when the group has no chord size (.s)
	Parts    []ChordPartResult
}

// ChordPartReturn is RedisBackend.on_chord_part_return's bookkeeping for
// one part; Go and Python workers may finish the parts of one chord.
func (b *Backend) ChordPartReturn(ctx context.Context, part ChordPart) (*ChordJoin, error) {
	if part.GroupID == "" || part.TaskID == "" {
		return nil, errors.New("protocol: ChordPartReturn needs the group id and the task id")
	}
	result, _, err := encodeResultValue(StoreRequest{TaskID: part.TaskID, State: part.State, Result: part.Result})
	if err != nil {
		return nil, err
	}
	member := pyJSONSpacing([]byte(fmt.Sprintf(`[1,%s,%s,%s]`,
		resultJSONString(part.TaskID), resultJSONString(string(part.State)), result)))
	score := "+inf"
	if part.GroupIndex != nil {
		score = strconv.Itoa(*part.GroupIndex)
	}
	ttl := int64(0)
	if b.expires > 0 {
		ttl = int64(math.Ceil(b.expires.Seconds()))
	}
	conn, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("protocol: chord part %s of group %s: %w", part.TaskID, part.GroupID, err)
	}
	defer conn.Close()
	reply, err := redis.Values(chordPartScript.DoContext(ctx, conn,
		b.groupKey(part.GroupID, ".j"), b.groupKey(part.GroupID, ".t"), b.groupKey(part.GroupID, ".s"),
		member, score, ttl))
	if err != nil {
		return nil, fmt.Errorf("protocol: chord part %s of group %s: %w", part.TaskID, part.GroupID, err)
	}
	join := &ChordJoin{}
	var done int
	rest, err := redis.Scan(reply, &done, &join.Ready, &join.Total)
	if err != nil {
		return nil, fmt.Errorf("protocol: chord part %s of group %s: unexpected reply: %w", part.TaskID, part.GroupID, err)
	}
	if done == 0 {
		return join, nil
	}
	join.Complete = true
	members, err := redis.ByteSlices(rest[0], nil)
	if err != nil {
		return nil, fmt.Errorf("protocol: chord group %s: unexpected parts reply: %w", part.GroupID, err)
	}
	for _, m := range members {
		p, err := decodeChordMember(m)
		if err != nil {
			return nil, fmt.Errorf("protocol: chord group %s: %w", part.GroupID, err)
		}
		join.Parts = append(join.Parts, p)
	}
	return join, nil
}

// decodeChordMember reads one [1, tid, state, result] entry.
func decodeChordMember(raw []byte) (ChordPartResult, error) {
	var tup []json.RawMessage
	if err := json.Unmarshal(raw, &tup); err != nil || len(tup) < 4 {
		return ChordPartResult{}, fmt.Errorf("joined part is not [1, task_id, state, result]: %.200q", raw)
	}
	var p ChordPartResult
	if err := json.Unmarshal(tup[1], &p.TaskID); err != nil {
		return p, fmt.Errorf("joined part has no task id: %.200q", raw)
	}
	if err := json.Unmarshal(tup[2], &p.State); err != nil {
		return p, fmt.Errorf("joined part has no state: %.200q", raw)
	}
	p.Result = tup[3]
	return p, nil
}

// SavedGroupResult reports whether a GroupResult was saved for gid
// (apply_chord saves it only for headers that contain groups).
func (b *Backend) SavedGroupResult(ctx context.Context, gid string) (bool, error) {
	conn, err := b.pool.GetContext(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	return redis.Bool(redis.DoContext(conn, ctx, "EXISTS", b.groupKey(gid, "")))
}

// ChordCleanup deletes a joined chord's .j, .t and .s keys, as the
// completing Python worker does once the body is sent.
func (b *Backend) ChordCleanup(ctx context.Context, gid string) error {
	conn, err := b.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("protocol: clean up chord %s: %w", gid, err)
	}
	defer conn.Close()
	if _, err := redis.DoContext(conn, ctx, "DEL", b.groupKey(gid, ".j"), b.groupKey(gid, ".t"), b.groupKey(gid, ".s")); err != nil {
		return fmt.Errorf("protocol: clean up chord %s: %w", gid, err)
	}
	return nil
}

// pyJSONSpacing rewrites compact JSON the way Python's json.dumps writes
// it (", " and ": " separators, non-ASCII as \uXXXX), so a part a Go
// worker records is byte-identical to the one a Python worker records for
// the same result: the .j set counts distinct members, and a part run
// twice must not count twice.
func pyJSONSpacing(in []byte) []byte {
	var out bytes.Buffer
	out.Grow(len(in) + len(in)/8)
	inStr, esc := false, false
	for i := 0; i < len(in); {
		c := in[i]
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			case c >= utf8.RuneSelf:
				r, n := utf8.DecodeRune(in[i:])
				if r >= 0x10000 {
					r -= 0x10000
					fmt.Fprintf(&out, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
				} else {
					fmt.Fprintf(&out, `\u%04x`, r)
				}
				i += n
				continue
			}
			out.WriteByte(c)
			i++
			continue
		}
		if c == ' ' || c == '\n' || c == '\t' || c == '\r' {
			i++
			continue
		}
		out.WriteByte(c)
		switch c {
		case '"':
			inStr = true
		case ',', ':':
			out.WriteByte(' ')
		}
		i++
	}
	return out.Bytes()
}
