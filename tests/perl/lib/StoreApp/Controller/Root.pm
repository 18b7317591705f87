package StoreApp::Controller::Root;
# One action per step of tests/perl/catalyst_session.pl; each shows the session.
use strict;
use warnings;
use base 'Catalyst::Controller';
__PACKAGE__->config(namespace => '');
sub create : Local { my ($self, $c) = @_; $c->session->{user} = 'alice'; $c->session->{count} = 0; show($c); }
sub count : Local { my ($self, $c) = @_; $c->session->{count}++ if $c->sessionid; show($c); }
sub look : Local { my ($self, $c) = @_; show($c); }
sub change : Local { my ($self, $c) = @_; $c->change_session_id; show($c); }
sub flash_set : Local { my ($self, $c) = @_; $c->flash->{notice} = 'saved'; show($c); }
sub flash_get : Local { my ($self, $c) = @_; $c->res->body('flash=' . ($c->flash->{notice} // '-')); }
sub logout : Local { my ($self, $c) = @_; $c->delete_session('logout'); $c->res->body('logged out'); }
sub show {
    my ($c) = @_;
    my $s = $c->sessionid ? $c->session : {};
    $c->res->body(join ' ', map { "$_=" . ($s->{$_} // '-') } qw(user count));
}
1;
