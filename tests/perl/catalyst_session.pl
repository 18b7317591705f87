#!/usr/bin/perl
# Catalyst::Plugin::Session::Store::Redis 0.900 (Debian's
# libcatalyst-plugin-session-store-redis-perl, on Redis.pm) in a small
# Catalyst app driven in-process by Catalyst::Test, its cookie carried by
# hand (the app is tests/perl/lib/StoreApp.pm): create, count twice, change
# the session id, flash, logout; Redis::Fast
# then reads and writes the same keys as a second client would. Prints what
# each request saw, one line each; tests/it/other_stores.rs runs it through
# the proxy and directly on Redis and compares the two.
# Usage: perl catalyst_session.pl PORT
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
my $port;
BEGIN { $port = $ENV{STORE_APP_PORT} = shift @ARGV or die "usage: catalyst_session.pl PORT\n"; }

use Catalyst::Test 'StoreApp';
use HTTP::Request::Common;
use Redis::Fast;

my $cookie = '';
my %ids;
sub visit {
    my ($path) = @_;
    my $res = request(GET "/$path", $cookie ? (Cookie => $cookie) : ());
    die "$path: " . $res->status_line . "\n" . $res->content unless $res->is_success;
    if (my ($c) = ($res->header('Set-Cookie') // '') =~ /^(catsession=[^;]*)/) {
        $cookie = $c;
    }
    my ($id) = $cookie =~ /=(.*)/;
    $ids{$id} //= scalar keys %ids;
    printf "%s: %s (session %s)\n", $path, $res->content, $id ? "#$ids{$id}" : 'none';
    return $id;
}

my $redis = Redis::Fast->new(server => "127.0.0.1:$port");
$redis->select(1);
visit('create');
visit('count');
my $first = visit('count');
my $second = visit('change');
printf "old id's keys: %d, new id's keys: %d\n",
    scalar(grep { $redis->exists("$_:$first") } qw(session expires)),
    scalar(grep { $redis->exists("$_:$second") } qw(session expires));
visit('look');
printf "ttl set: %s\n", ($redis->ttl("session:$second") > 0 ? 'yes' : 'no');
visit('flash_set');
visit('flash_get');
visit('flash_get');
visit('logout');
printf "keys after logout: %d\n", scalar(grep { $redis->exists("$_:$second") } qw(session expires flash));
visit('look');
# Another client (Redis::Fast) sees and changes the same session.
$cookie = '';
my $third = visit('create');
my $stored = $redis->get("session:$third");
printf "stored by Catalyst, read by Redis::Fast: %s\n", defined $stored ? 'yes' : 'no';
$redis->del("session:$third", "expires:$third");
visit('look');
