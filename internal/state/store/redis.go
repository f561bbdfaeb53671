package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the fleet-wide Store. Each value is a hash {v: version, d: data};
// Create is HSETNX-style via a script and Update a compare-and-swap script,
// so a transition is atomic across every replica.
type Redis struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedis wraps c; keys are namespaced under prefix (e.g. "pmcp:paper:").
func NewRedis(c redis.UniversalClient, prefix string) *Redis {
	return &Redis{c: c, prefix: prefix}
}

// Client exposes the underlying client for components that need Redis
// primitives of their own (rate limiting).
func (r *Redis) Client() redis.UniversalClient { return r.c }

var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 1, 'd', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1`)

var updateScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if v ~= ARGV[2] then return 0 end
local nv = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'v', nv, 'd', ARGV[1])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) else redis.call('PERSIST', KEYS[1]) end
return nv`)

func unavailable(op string, err error) error {
	return fmt.Errorf("%w: redis %s: %v", ErrUnavailable, op, err)
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, int64, error) {
	vals, err := r.c.HMGet(ctx, r.prefix+key, "v", "d").Result()
	if err != nil {
		return nil, 0, unavailable("get", err)
	}
	vs, ok1 := vals[0].(string)
	ds, ok2 := vals[1].(string)
	if !ok1 || !ok2 {
		return nil, 0, ErrNotFound
	}
	v, err := strconv.ParseInt(vs, 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("store: corrupt version at %s: %w", key, err)
	}
	return []byte(ds), v, nil
}

// Create implements Store.
func (r *Redis) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	n, err := createScript.Run(ctx, r.c, []string{r.prefix + key}, value, ttl.Milliseconds()).Int()
	if err != nil {
		return unavailable("create", err)
	}
	if n == 0 {
		return ErrConflict
	}
	return nil
}

// Update implements Store.
func (r *Redis) Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error) {
	n, err := updateScript.Run(ctx, r.c, []string{r.prefix + key}, value, strconv.FormatInt(version, 10), ttl.Milliseconds()).Int64()
	switch {
	case err != nil:
		return 0, unavailable("update", err)
	case n == -1:
		return 0, ErrNotFound
	case n == 0:
		return 0, ErrConflict
	}
	return n, nil
}

// tallyScript adds a member to a hash of member -> amount unless it is
// there, within bounds, atomically: 1 added (or already there), 0 refused.
var tallyScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
local vals = redis.call('HVALS', KEYS[1])
local sum = 0
for _, v in ipairs(vals) do sum = sum + tonumber(v) end
local amount, maxn, maxsum = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if maxn > 0 and #vals + 1 > maxn then return 0 end
if maxsum > 0 and sum + amount > maxsum then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
return 1
`)

// Tally implements Store.
func (r *Redis) Tally(ctx context.Context, key, member string, amount float64, maxCount int, maxSum float64, ttl time.Duration) error {
	n, err := tallyScript.Run(ctx, r.c, []string{r.prefix + key}, member, strconv.FormatFloat(amount, 'f', -1, 64),
		maxCount, strconv.FormatFloat(maxSum, 'f', -1, 64), ttl.Milliseconds()).Int()
	switch {
	case err != nil:
		return unavailable("tally", err)
	case n == 0:
		return ErrLimit
	}
	return nil
}

// TallyRead implements Store.
func (r *Redis) TallyRead(ctx context.Context, key, exclude string) (int, float64, error) {
	all, err := r.c.HGetAll(ctx, r.prefix+key).Result()
	if err != nil {
		return 0, 0, unavailable("tally read", err)
	}
	n, sum := 0, 0.0
	for k, v := range all {
		if k == exclude {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("tally %s: member %s: %w", key, k, err)
		}
		n++
		sum += f
	}
	return n, sum, nil
}

// IndexAdd implements Store.
func (r *Redis) IndexAdd(ctx context.Context, index, member string, score float64) error {
	if err := r.c.ZAdd(ctx, r.prefix+index, redis.Z{Score: score, Member: member}).Err(); err != nil {
		return unavailable("index add", err)
	}
	return nil
}

// IndexRemove implements Store.
func (r *Redis) IndexRemove(ctx context.Context, index, member string) error {
	if err := r.c.ZRem(ctx, r.prefix+index, member).Err(); err != nil {
		return unavailable("index remove", err)
	}
	return nil
}

// IndexAddAll implements Store, in one pipeline.
func (r *Redis) IndexAddAll(ctx context.Context, indexes []string, member string, score float64) error {
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, idx := range indexes {
			p.ZAdd(ctx, r.prefix+idx, redis.Z{Score: score, Member: member})
		}
		return nil
	})
	if err != nil {
		return unavailable("index add", err)
	}
	return nil
}

// IndexRemoveAll implements Store, in one pipeline.
func (r *Redis) IndexRemoveAll(ctx context.Context, indexes []string, members ...string) error {
	if len(members) == 0 {
		return nil
	}
	ms := make([]any, len(members))
	for i, m := range members {
		ms[i] = m
	}
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, idx := range indexes {
			p.ZRem(ctx, r.prefix+idx, ms...)
		}
		return nil
	})
	if err != nil {
		return unavailable("index remove", err)
	}
	return nil
}

// IndexRange implements Store.
func (r *Redis) IndexRange(ctx context.Context, index string, limit int) ([]string, error) {
	return r.IndexRangeFrom(ctx, index, math.Inf(-1), limit)
}

// IndexRangeFrom implements Store.
func (r *Redis) IndexRangeFrom(ctx context.Context, index string, from float64, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	out, err := r.c.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: r.prefix + index, ByScore: true, Count: int64(limit),
		Start: scoreArg(from), Stop: "+inf",
	}).Result()
	if err != nil {
		return nil, unavailable("index range", err)
	}
	return out, nil
}

// scoreArg writes a score as Redis reads a range bound ("-inf" and "+inf"
// for the infinities).
func scoreArg(f float64) string {
	switch {
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsInf(f, 1):
		return "+inf"
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.c.Ping(ctx).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return unavailable("ping", err)
	}
	return nil
}

// Close implements Store.
func (r *Redis) Close() error { return r.c.Close() }
