#!/usr/bin/perl
# A remote-controlled AnyEvent::Handle: the real peer for tests/interop.rs.
#
#   perl ae_peer.pl listen  PORT [OPTIONS]   accept one connection on 127.0.0.1:PORT
#   perl ae_peer.pl connect PORT [OPTIONS]   connect to 127.0.0.1:PORT
#
# OPTIONS is a JSON object of extra AnyEvent::Handle->new arguments (tls,
# tls_ctx, peername, ...) plus "watchdog": seconds before the script gives up
# and exits on its own (default 30).
#
# Commands arrive on stdin, one JSON array per line. Events go to stdout, one
# JSON object per line ({"ev": ...}). Read commands take JSON arguments;
# write commands take Perl expressions, evaluated here, so a test can build
# Perl-native values (byte vs character strings, tags, 3 MB strings):
#
#   ["read", TYPE, ARGS...]   push_read TYPE; reports {"ev":"read","v":[...]}
#   ["echo", TYPE, ARGS...]   the same, then writes the value back, same type
#                             (json: followed by "\n", as AE's docs advise)
#   ["write", TYPE, EXPR...]  push_write TYPE => values ("raw": plain bytes)
#   ["dribble", MAX, DELAY, TYPE, EXPR...]
#                             format as "write" would, then write it in random
#                             pieces of 1..MAX bytes, DELAY seconds apart
#   ["starttls", MODE [, EXPR]]  EXPR: plaintext to push_write first, in the
#                             same turn (one packet with the autocork option)
#   ["stoptls"]  ["sync"]
#
# Output commands run in order, one per event-loop turn, after the ones
# before them ("sync" reports {"ev":"sync"} once they have all been handed
# to the handle). Read types take: line [EOL | {"re": REGEX}], chunk N,
# regex ACCEPT [REJECT [SKIP]] (null = none), netstring, packstring FMT,
# json, cbor, tls_detect, tls_autostart MODE.
use strict;
use warnings;

use AnyEvent;
use AnyEvent::Handle;
use AnyEvent::Socket qw(tcp_server tcp_connect);
use B ();
use CBOR::XS ();
use Encode ();
use JSON::XS ();
use Types::Serialiser ();

$| = 1;
srand 8;    # the same random splits every run
my ($role, $port, $options) = @ARGV;
die "usage: $0 listen|connect PORT [OPTIONS_JSON]\n"
    unless defined $port && ($role // '') =~ /^(?:listen|connect)$/;
my %opts = %{ JSON::XS::decode_json($options // '{}') };
my $watchdog = delete $opts{watchdog} // 30;

my $out = JSON::XS->new->utf8->canonical;
sub event { print $out->encode({@_}), "\n" }

my $give_up = AE::timer $watchdog, 0, sub { event(ev => 'watchdog'); exit 3 };

# ---- describing what AnyEvent::Handle handed us -----------------------------
# Perl-level types matter here (a CBOR byte string is an unflagged scalar, a
# text string a UTF-8 flagged one; numbers are IVs or NVs), so look at the
# scalar's flags before anything stringifies it.
sub describe {
    my ($v) = @_;
    return undef unless defined $v;
    return $v ? JSON::XS::true : JSON::XS::false if Types::Serialiser::is_bool($v);
    my $ref = ref $v;
    return [ map { describe($_) } @$v ] if $ref eq 'ARRAY';
    return { map { ($_ => describe($v->{$_})) } keys %$v } if $ref eq 'HASH';
    return { tag => $v->[0], value => describe($v->[1]) } if $ref eq 'CBOR::XS::Tagged';
    return { ref => $ref } if $ref;
    my $flags = B::svref_2object(\$v)->FLAGS;
    if (!($flags & B::SVf_POK)) {
        return { int => "$v" } if $flags & B::SVf_IOK;
        return { float => sprintf '%.17g', $v } if $flags & B::SVf_NOK;
    }
    my $kind = utf8::is_utf8($v) ? 'text' : 'bytes';
    my $octets = $v;
    Encode::_utf8_off($octets);    # the UTF-8 of text, as is
    # CBOR::XS takes text strings that are not UTF-8 (docs/semantics.md §11): show them.
    return { malformed_text => unpack 'H*', $octets } if $kind eq 'text' && !utf8::valid($v);
    return { $kind => $kind eq 'text' ? $v : unpack 'H*', $v } if length $octets <= 4096;
    # Large payloads: length and byte sum (the echo checks every byte).
    return { "${kind}_len" => length $octets, sum => unpack '%32C*', $octets };
}

# ---- the connection ---------------------------------------------------------
my $h;
my $server;
my @early;    # commands that arrived before the connection

sub start {
    my ($fh) = @_;
    $h = AnyEvent::Handle->new(
        fh          => $fh,
        no_delay    => 1,
        on_error    => sub { event(ev => 'error', fatal => $_[1] ? 1 : 0, msg => $_[2], errno => 0 + $!) },
        on_eof      => sub { event(ev => 'eof') },
        on_starttls => sub { event(ev => 'starttls', ok => $_[1] ? 1 : 0, msg => $_[2]) },
        on_stoptls  => sub { event(ev => 'stoptls') },
        %opts,
    );
    event(ev => 'connected');
    command(@$_) for splice @early;
}

if ($role eq 'listen') {
    $server = tcp_server '127.0.0.1', $port, sub {
        my ($fh) = @_;
        undef $server;    # one connection only
        start($fh);
    }, sub {
        $port = $_[2];
        128;
    };
    # The prepare callback runs before listen(): report only now.
    event(ev => 'listening', port => 0 + $port);
} else {
    tcp_connect '127.0.0.1', $port, sub {
        my ($fh) = @_ or do { event(ev => 'connect_failed', msg => "$!"); exit 2 };
        start($fh);
    };
}

# ---- output steps, strictly in order ----------------------------------------
my (@steps, $pump);

sub later {
    push @steps, @_;
    $pump ||= AE::timer 0, 0, \&run_step;
}

sub run_step {
    undef $pump;
    my $step = shift @steps or return;
    my $delay = $step->() // 0;
    $pump = AE::timer $delay, 0, \&run_step if @steps;
}

# The bytes push_write(TYPE => ARGS) would append, from the handle's own
# write types.
sub format_bytes {
    my ($type, @args) = @_;
    return $args[0] if $type eq 'raw';
    return $AnyEvent::Handle::WH{$type}->($h, @args);
}

sub values_of {
    my @exprs = @_;
    return map {
        my $v = eval "no strict; no warnings; $_";
        die "bad expression <$_>: $@" if $@;
        $v;
    } @exprs;
}

# A write that dies (a packstring "C" over 255 bytes) is reported, not fatal.
sub guarded {
    my ($what, $code) = @_;
    return sub {
        my $ok = eval { $code->(); 1 };
        event(ev => 'died', what => $what, msg => "$@") unless $ok;
        return;
    };
}

sub write_values {
    my ($type, @values) = @_;
    return guarded "write $type", sub {
        $type eq 'raw' ? $h->push_write($values[0]) : $h->push_write($type => @values);
    };
}

# ---- reads ------------------------------------------------------------------
sub read_args {
    my ($type, @args) = @_;
    if ($type eq 'line') {
        return () unless @args;
        return ref $args[0] ? qr/$args[0]{re}/ : $args[0];
    }
    if ($type eq 'regex') {
        return map { defined $_ ? qr/$_/ : undef } @args;
    }
    return @args;
}

# What echo writes back for a value read with TYPE.
sub echo_write {
    my ($type, $args, @got) = @_;
    return write_values(raw => $got[0] . $got[1]) if $type eq 'line';
    return write_values(raw => $got[0]) if $type eq 'chunk' || $type eq 'regex';
    return write_values(packstring => $args->[0], $got[0]) if $type eq 'packstring';
    # AE's json writer adds no separator, so two numbers would run together:
    # follow its docs (WT-json-1) and add a newline.
    return write_values(raw => format_bytes(json => $got[0]) . "\n") if $type eq 'json';
    return write_values($type => $got[0]);
}

sub push_a_read {
    my ($echo, $type, @args) = @_;
    my $done = sub {
        my (undef, @got) = @_;
        event(ev => 'read', type => $type, v => [ map { describe($_) } @got ]);
        later(echo_write($type, \@args, @got)) if $echo;
    };
    if ($type eq 'tls_autostart') {
        $h->push_read(tls_autostart => @args);    # the mode is its last argument
    } else {
        $h->push_read($type => read_args($type, @args), $done);
    }
}

# ---- commands ---------------------------------------------------------------
my %commands = (
    read => sub { push_a_read(0, @_) },
    echo => sub { push_a_read(1, @_) },
    write => sub {
        my ($type, @exprs) = @_;
        later(write_values($type, values_of(@exprs)));
    },
    dribble => sub {
        my ($max, $delay, $type, @exprs) = @_;
        my @values = values_of(@exprs);
        later(guarded "dribble $type", sub {
            my $bytes = format_bytes($type, @values);
            my @pieces;
            while (length $bytes) {
                push @pieces, substr $bytes, 0, 1 + int rand $max, '';
            }
            # Run before any step queued after this one.
            unshift @steps, map {
                my $piece = $_;
                sub { $h->push_write($piece); $delay };
            } @pieces;
        });
    },
    starttls => sub {
        my ($mode, $plaintext) = @_;
        my ($first) = values_of(grep { defined } $plaintext);
        later(guarded starttls => sub {
            $h->push_write($first) if defined $first;    # same step: one flight with autocork
            $h->starttls($mode);
        });
    },
    stoptls => sub { later(sub { $h->stoptls; return }) },
    sync    => sub { later(sub { event(ev => 'sync'); return }) },
);

sub command {
    my ($name, @args) = @_;
    my $command = $commands{$name} or die "unknown command $name\n";
    $command->(@args);
}

# The test closing our stdin (or dying) ends the script.
my $control = AnyEvent::Handle->new(
    fh       => \*STDIN,
    on_error => sub { exit 0 },
    on_eof   => sub { exit 0 },
);
$control->on_read(sub {
    $_[0]->push_read(line => sub {
        my $cmd = JSON::XS::decode_json($_[1]);
        $h ? command(@$cmd) : push @early, $cmd;
    });
});

AE::cv->recv;
