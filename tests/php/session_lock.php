<?php
// One PHP request with phpredis's native session handler and session
// locking on, pointed at `tcp://127.0.0.1:PORT`: opens session ID, adds 1 to
// its counter, holds the session SLEEP_MS, then writes and closes it. Prints
// the counter; any warning (phpredis's "Failed to write session data", a
// lock it could not get) exits 1. Run by tests/sessions.rs.
// Usage: php session_lock.php PORT ID SLEEP_MS
set_error_handler(function ($no, $message) {
    fwrite(STDERR, "PHP warning: $message\n");
    exit(1);
});
[$_, $port, $id, $sleep_ms] = $argv;
ini_set('session.save_handler', 'redis');
ini_set('session.save_path', "tcp://127.0.0.1:$port");
ini_set('redis.session.locking_enabled', '1');
ini_set('redis.session.lock_expire', '30');
ini_set('redis.session.lock_wait_time', '20000');
ini_set('redis.session.lock_retries', '500');
ini_set('session.use_cookies', '0');
ini_set('session.use_strict_mode', '0');
session_id($id);
if (!session_start()) {
    fwrite(STDERR, "session_start failed\n");
    exit(1);
}
$_SESSION['count'] = ($_SESSION['count'] ?? 0) + 1;
usleep((int)$sleep_ms * 1000);
$count = $_SESSION['count'];
if (!session_write_close()) {
    fwrite(STDERR, "session_write_close failed\n");
    exit(1);
}
echo "count=$count\n";
