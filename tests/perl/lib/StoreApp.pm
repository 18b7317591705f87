package StoreApp;
# The Catalyst app tests/perl/catalyst_session.pl drives: the session plugin
# with Catalyst::Plugin::Session::Store::Redis on 127.0.0.1:$STORE_APP_PORT.
use strict;
use warnings;
use Catalyst qw/Session Session::Store::Redis Session::State::Cookie/;
__PACKAGE__->config(
    name => 'StoreApp',
    'Plugin::Session' => {
        expires => 600,
        redis_server => "127.0.0.1:$ENV{STORE_APP_PORT}",
        redis_db => 1,
        cookie_name => 'catsession',
    },
);
__PACKAGE__->log(Catalyst::Log->new('error'));
__PACKAGE__->setup;
1;
