<?php
// Predis 1.1's session handler (Debian php-predis) pointed at
// 127.0.0.1:PORT: three requests to one session (create, count, count), then
// one that destroys it and one more; prints what each saw as JSON.
// tests/other_stores.rs runs it through the proxy and directly on Redis and
// compares the two. Usage: php predis_session.php PORT
// Warnings fail the run; Predis 1.1's deprecation notices on PHP 8 do not.
set_error_handler(function ($no, $message) {
    fwrite(STDERR, "PHP warning: $message\n");
    exit(1);
}, E_WARNING | E_USER_WARNING);
require '/usr/share/php/Predis/autoload.php';
$port = $argv[1];
ini_set('session.use_cookies', '0');
ini_set('session.use_strict_mode', '0');
$client = new Predis\Client("tcp://127.0.0.1:$port", ['prefix' => 'predis:']);
$handler = new Predis\Session\Handler($client, ['gc_maxlifetime' => 600]);
$handler->register();
$seen = [];
foreach (['create', 'incr', 'incr', 'destroy', 'after'] as $i => $step) {
    session_id('predissession1');
    session_start();
    if ($step === 'create') {
        $_SESSION = ['user' => 'alice', 'count' => 0];
    } elseif ($step === 'incr') {
        $_SESSION['count']++;
    }
    $seen["$i:$step"] = ['user' => $_SESSION['user'] ?? null, 'count' => $_SESSION['count'] ?? null];
    if ($step === 'destroy') {
        session_destroy();
    } else {
        session_write_close();
    }
}
echo json_encode($seen), "\n";
