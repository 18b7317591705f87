<?php
// Laravel 8's Redis session, cache and cache lock (Debian php-illuminate-redis,
// -cache, -session) with phpredis or Predis, pointed at 127.0.0.1:PORT and
// put together as Laravel's service providers do with the default config
// (connection prefix laravel_database_, cache prefix laravel_cache): a
// session started, counted, regenerated (the old id destroyed), invalidated;
// the cache's put/get/many/putMany/add/increment/forget/flush; a lock taken,
// refused to a second owner, released by its Lua script, taken again.
// Prints what each step saw as JSON; tests/it/other_stores.rs runs it through
// the proxy and directly on Redis and compares the two.
// Usage: php laravel_session.php PORT phpredis|predis
set_error_handler(function ($no, $message) {
    fwrite(STDERR, "PHP warning: $message\n");
    exit(1);
}, E_WARNING | E_USER_WARNING);
foreach (['Support', 'Collections', 'Macroable', 'Contracts', 'Redis', 'Cache', 'Session'] as $part) {
    require "/usr/share/php/Illuminate/$part/autoload.php";
}
require '/usr/share/php/Predis/autoload.php';

use Illuminate\Cache\RedisStore;
use Illuminate\Cache\Repository;
use Illuminate\Redis\RedisManager;
use Illuminate\Session\CacheBasedSessionHandler;
use Illuminate\Session\Store;

[$_, $port, $driver] = $argv;
$redis = new RedisManager(null, $driver, [
    'client' => $driver,
    'options' => ['prefix' => 'laravel_database_'],
    'default' => ['host' => '127.0.0.1', 'port' => (int) $port, 'database' => 0],
    'cache' => ['host' => '127.0.0.1', 'port' => (int) $port, 'database' => 1],
]);
$store = new RedisStore($redis, 'laravel_cache', 'cache');
$cache = new Repository($store);
$seen = [];
$ids = [];
$label = function (string $id) use (&$ids) {
    if (!isset($ids[$id])) {
        $ids[$id] = '#' . count($ids);
    }
    return $ids[$id];
};

// Sessions: Laravel's redis session driver is the cache handler on the
// redis store, 120 minutes.
$request = function (string $step, ?string $id, callable $work) use ($cache, &$seen, $label) {
    $session = new Store('laravel_session', new CacheBasedSessionHandler($cache, 120), $id);
    $session->start();
    $work($session);
    $session->save();
    $seen[] = [$step, $label($session->getId()), $session->get('user'), $session->get('count')];
    return $session->getId();
};
$stored = function (string $id) use ($cache) {
    return $cache->has($id);
};
$id = $request('create', null, function ($s) {
    $s->put('user', 'alice');
    $s->put('count', 0);
});
foreach ([1, 2] as $_) {
    $id = $request('count', $id, function ($s) {
        $s->increment('count');
    });
}
$old = $id;
$id = $request('regenerate', $id, function ($s) {
    $s->regenerate(true);
    $s->flash('status', 'logged in again');
});
$seen[] = ['old id stored' => $stored($old), 'new id stored' => $stored($id)];
$request('flash', $id, function ($s) use (&$seen) {
    $seen[] = ['flash' => $s->get('status')];
});
$request('invalidate', $id, function ($s) {
    $s->invalidate();
});
$seen[] = ['invalidated id stored' => $stored($id)];

// The cache.
$seen[] = ['put' => $cache->put('a', 'one', 600), 'get' => $cache->get('a')];
$seen[] = ['putMany' => $cache->putMany(['b' => 'two', 'c' => 'three', 'd' => ['x' => 4]], 600)];
$seen[] = ['many' => $cache->many(['a', 'b', 'c', 'd', 'missing'])];
$seen[] = ['add new' => $cache->add('e', 'five', 600), 'add again' => $cache->add('e', 'six', 600), 'e' => $cache->get('e')];
$seen[] = ['increment' => $cache->increment('n', 3), 'again' => $cache->increment('n', 2), 'decrement' => $cache->decrement('n')];
$seen[] = ['forget' => $cache->forget('a'), 'a' => $cache->get('a')];
$seen[] = ['remember' => $cache->remember('r', 600, function () {
    return 'computed';
}), 'remembered' => $cache->remember('r', 600, function () {
    return 'computed twice';
})];

// Locks: one owner at a time, released only by its owner (a Lua script).
$lock = $cache->lock('report', 10);
$other = $cache->lock('report', 10);
$seen[] = ['first get' => $lock->get(), 'second get' => $other->get()];
$seen[] = ['release by other' => $other->release(), 'still held' => !$cache->lock('report', 10)->get()];
$seen[] = ['release by owner' => $lock->release(), 'taken again' => $other->get()];
$seen[] = ['restored owner releases' => $cache->restoreLock('report', $other->owner())->release()];
$seen[] = ['block' => $cache->lock('report', 10)->block(1, function () {
    return 'ran under the lock';
})];

$seen[] = ['flush' => $cache->flush(), 'b after flush' => $cache->get('b')];
echo json_encode($seen), "\n";
