<?php
// Symfony 5.4's RedisSessionHandler (Debian php-symfony-http-foundation) with
// phpredis or Predis, pointed at 127.0.0.1:PORT, through Symfony's Session
// and NativeSessionStorage as a Symfony site uses them: start, write, load,
// migrate(true) (a new id, the old one destroyed), strict mode refusing an
// id nobody issued, invalidate. Prints what each request saw as JSON;
// tests/it/other_stores.rs runs it through the proxy and directly on Redis
// and compares the two. Usage: php symfony_session.php PORT phpredis|predis
set_error_handler(function ($no, $message) {
    fwrite(STDERR, "PHP warning: $message\n");
    exit(1);
}, E_WARNING | E_USER_WARNING);
require '/usr/share/php/Symfony/Component/HttpFoundation/autoload.php';
require '/usr/share/php/Predis/autoload.php';

use Symfony\Component\HttpFoundation\Session\Session;
use Symfony\Component\HttpFoundation\Session\Storage\Handler\RedisSessionHandler;
use Symfony\Component\HttpFoundation\Session\Storage\NativeSessionStorage;

[$_, $port, $kind] = $argv;
if ($kind === 'phpredis') {
    $redis = new Redis();
    $redis->connect('127.0.0.1', (int) $port);
} else {
    $redis = new Predis\Client("tcp://127.0.0.1:$port");
}
// Symfony's default prefix is sf_s (no colon).
$handler = new RedisSessionHandler($redis, ['ttl' => 600]);
$seen = [];
$ids = [];
$label = function (string $id) use (&$ids) {
    if (!isset($ids[$id])) {
        $ids[$id] = '#' . count($ids);
    }
    return $ids[$id];
};
// One request: a new Session over a new storage, the id from the "cookie".
$request = function (string $step, ?string $id, callable $work) use ($handler, &$seen, $label) {
    $storage = new NativeSessionStorage(
        ['use_cookies' => 0, 'use_strict_mode' => 1, 'gc_probability' => 0],
        $handler
    );
    $session = new Session($storage);
    if ($id !== null) {
        $session->setId($id);
    }
    $session->start();
    $work($session);
    $out = $session->getId();
    $seen[] = [
        'step' => $step,
        'id' => $label($out),
        'user' => $session->get('user'),
        'count' => $session->get('count'),
        'flash' => $session->getFlashBag()->peekAll(),
    ];
    $session->save();
    return $out;
};
$exists = function (string $id) use ($redis) {
    return (int) $redis->exists("sf_s$id");
};

$id = $request('create', null, function ($s) {
    $s->set('user', 'alice');
    $s->set('count', 0);
});
foreach ([1, 2] as $_) {
    $id = $request('count', $id, function ($s) {
        $s->set('count', $s->get('count') + 1);
    });
}
$old = $id;
$id = $request('migrate', $id, function ($s) {
    $s->migrate(true);
    $s->getFlashBag()->add('notice', 'logged in again');
});
$seen[] = ['old id kept' => $exists($old), 'new id stored' => $exists($id)];
$seen[] = ['ttl set' => $redis->ttl("sf_s$id") > 0];
$request('load', $id, function ($s) {
    $s->getFlashBag()->get('notice');
});
// Strict mode: an id nobody issued is replaced by a fresh one.
$request('strict', 'chosenbyanattacker1234', function () {});
$seen[] = ['attacker id stored' => $exists('chosenbyanattacker1234')];
$request('invalidate', $id, function ($s) {
    $s->invalidate();
});
$seen[] = ['invalidated id stored' => $exists($id)];
$request('after', $id, function () {});
echo json_encode($seen), "\n";
