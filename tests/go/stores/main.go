// Go session stores, unmodified, pointed at 127.0.0.1:PORT: gorilla/sessions
// with boj/redistore (redigo) in db 0 and db 1, and go-redis v5 (a hash
// session, MULTI, WATCH with a lost race, SCAN). Prints what each step saw,
// one line each; tests/it/other_stores.rs runs it through the proxy and
// directly on Redis and compares the two. Built in GOPATH mode from Debian's
// packaged sources (golang-github-boj-redistore-dev,
// golang-gopkg-redis.v5-dev). Usage: stores PORT
package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"time"

	"github.com/boj/redistore"
	"github.com/gorilla/sessions"
	redis "gopkg.in/redis.v5"
)

func fail(step string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", step, err)
	os.Exit(1)
}

// request runs one HTTP request against the store: the cookie it carries in,
// the handler's work on the session, and the cookie it sends back.
func request(store *redistore.RediStore, cookie *http.Cookie, work func(*sessions.Session)) (*http.Cookie, *sessions.Session) {
	req := httptest.NewRequest("GET", "/", nil)
	if cookie != nil {
		req.AddCookie(cookie)
	}
	session, err := store.Get(req, "gosession")
	if err != nil {
		fail("get", err)
	}
	work(session)
	rec := httptest.NewRecorder()
	if err := session.Save(req, rec); err != nil {
		fail("save", err)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == "gosession" {
			return c, session
		}
	}
	return cookie, session
}

func redistoreSteps(port, db string) {
	store, err := redistore.NewRediStoreWithDB(4, "tcp", "127.0.0.1:"+port, "", db, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		fail("redistore", err)
	}
	defer store.Close()
	store.SetKeyPrefix("gosession_")
	say := func(step string, s *sessions.Session) {
		fmt.Printf("redistore db%s %s: new=%v user=%v count=%v\n", db, step, s.IsNew, s.Values["user"], s.Values["count"])
	}
	cookie, s := request(store, nil, func(s *sessions.Session) {
		s.Values["user"] = "alice"
		s.Values["count"] = 0
	})
	say("create", s)
	for i := 0; i < 2; i++ {
		cookie, s = request(store, cookie, func(s *sessions.Session) {
			s.Values["count"] = s.Values["count"].(int) + 1
		})
		say("count", s)
	}
	// Regenerate the id: the old session is deleted, a new one saved.
	old := cookie
	var values map[interface{}]interface{}
	_, s = request(store, old, func(s *sessions.Session) {
		values = s.Values
		s.Options.MaxAge = -1
	})
	say("drop-old", s)
	cookie, s = request(store, nil, func(s *sessions.Session) {
		for k, v := range values {
			s.Values[k] = v
		}
	})
	say("regenerated", s)
	_, s = request(store, old, func(*sessions.Session) {})
	say("old-id", s)
	_, s = request(store, cookie, func(*sessions.Session) {})
	say("new-id", s)
	// A short max age expires on the server.
	store.SetMaxAge(1)
	short, s := request(store, nil, func(s *sessions.Session) { s.Values["user"] = "bob" })
	say("short", s)
	conn := store.Pool.Get()
	ttl, err := conn.Do("TTL", "gosession_"+s.ID)
	conn.Close()
	if err != nil {
		fail("ttl", err)
	}
	fmt.Printf("redistore db%s ttl: %v\n", db, ttl)
	// The server expires it (the cookie's own timestamp would be refused too).
	_ = short
	conn = store.Pool.Get()
	for i := 0; i < 40; i++ {
		n, err := conn.Do("EXISTS", "gosession_"+s.ID)
		if err != nil {
			fail("exists", err)
		}
		if n.(int64) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	exists, err := conn.Do("EXISTS", "gosession_"+s.ID)
	conn.Close()
	fmt.Printf("redistore db%s expired: exists=%v err=%v\n", db, exists, err)
	store.SetMaxAge(600)
	// Logout.
	_, s = request(store, cookie, func(s *sessions.Session) { s.Options.MaxAge = -1 })
	say("logout", s)
	_, s = request(store, cookie, func(*sessions.Session) {})
	say("after-logout", s)
}

func goRedisSteps(port string) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	defer client.Close()
	say := func(step string, v interface{}, err error) {
		if err != nil {
			fmt.Printf("go-redis %s: error %v\n", step, err)
		} else {
			fmt.Printf("go-redis %s: %v\n", step, v)
		}
	}
	key := "gosession:hash1"
	client.Del(key)
	say("hmset", nil, client.HMSet(key, map[string]string{"user": "alice", "count": "0"}).Err())
	n, err := client.HIncrBy(key, "count", 1).Result()
	say("hincrby", n, err)
	say("expire", nil, client.Expire(key, 600*time.Second).Err())
	all, err := client.HGetAll(key).Result()
	say("hgetall", all, err)
	ttl, err := client.TTL(key).Result()
	say("ttl>0", ttl > 0, err)
	// MULTI/EXEC: save a session and its index together.
	cmds, err := client.TxPipelined(func(p *redis.Pipeline) error {
		p.Set("gosession:tx1", "payload", 600*time.Second)
		p.SAdd("gosession:{alice}:index", "tx1")
		p.Incr("gosession:{alice}:count")
		return nil
	})
	for _, c := range cmds {
		say("tx", c.String(), nil)
	}
	say("tx", len(cmds), err)
	// WATCH: a read-modify-write that loses a race to another client.
	other := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	defer other.Close()
	client.Set("gosession:watched", "1", 0)
	err = client.Watch(func(tx *redis.Tx) error {
		v, err := tx.Get("gosession:watched").Int64()
		if err != nil {
			return err
		}
		other.Set("gosession:watched", "100", 0)
		_, err = tx.Pipelined(func(p *redis.Pipeline) error {
			p.Set("gosession:watched", fmt.Sprint(v+1), 0)
			return nil
		})
		return err
	}, "gosession:watched")
	say("watch lost race", err == redis.TxFailedErr, nil)
	v, err := client.Get("gosession:watched").Result()
	say("watched value", v, err)
	// And wins when nobody else writes.
	err = client.Watch(func(tx *redis.Tx) error {
		v, err := tx.Get("gosession:watched").Int64()
		if err != nil {
			return err
		}
		_, err = tx.Pipelined(func(p *redis.Pipeline) error {
			p.Set("gosession:watched", fmt.Sprint(v+1), 0)
			return nil
		})
		return err
	}, "gosession:watched")
	say("watch won", err, nil)
	v, err = client.Get("gosession:watched").Result()
	say("watched value", v, err)
	// SCAN over every session key, as an admin page listing sessions would.
	for i := 0; i < 50; i++ {
		client.Set(fmt.Sprintf("gosession:scan%02d", i), i, 600*time.Second)
	}
	var found []string
	var cursor uint64
	for {
		keys, next, err := client.Scan(cursor, "gosession:scan*", 10).Result()
		if err != nil {
			fail("scan", err)
		}
		found = append(found, keys...)
		cursor = next
		if cursor == 0 {
			break
		}
	}
	sort.Strings(found)
	seen := map[string]bool{}
	dups := 0
	for _, k := range found {
		if seen[k] {
			dups++
		}
		seen[k] = true
	}
	say("scan distinct", len(seen), nil)
	deleted, err := client.Del(found...).Result()
	say("del", deleted > 0 && int(deleted) == len(seen), err)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: stores PORT")
		os.Exit(64)
	}
	port := os.Args[1]
	redistoreSteps(port, "0")
	redistoreSteps(port, "1")
	goRedisSteps(port)
}
