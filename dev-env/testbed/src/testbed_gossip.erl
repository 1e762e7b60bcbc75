%%% @doc libcluster-compatible gossip heartbeats (Cluster.Strategy.Gossip), loopback only.
%%%
%%% Pure functions (no sockets):
%%%   heartbeat(Node, Secret | undefined) -> binary()   what one node sends
%%%   plain(Node) -> binary()                           <<"heartbeat::", term_to_binary(#{node => Node})>>
%%%   seal(Plain, Secret) -> binary()                   IV ++ AES-256-CBC(SHA-256(Secret), IV, PKCS#7(Plain))
%%%   seal(Plain, Secret, IV) -> binary()               the same with a given 16-byte IV (for vectors)
%%%   open(Packet, Secret | undefined) -> {ok, Node} | error
%%%                                                      decode a received datagram as libcluster does
%%%
%%% Sender (a process):
%%%   start_link(Opts) / start(Opts) -> {ok, Pid}; stop(Pid)
%%%   send_once(Opts) -> ok                             one heartbeat, no process
%%%   Opts = #{port     => 45892,                       UDP port
%%%            addr     => {239,255,0,1},               multicast group (sent with IP_MULTICAST_IF
%%%                                                      127.0.0.1, TTL 1, loop on) or 127.255.255.255
%%%            secret   => undefined | binary() | string(),
%%%            interval => {1, 5000},                   ms, uniformly random between heartbeats
%%%            node     => node()}
%%%   The sender sends one heartbeat at once, then one after every random interval.
%%%
%%% Receiver (for tests):
%%%   listen(#{port, addr}) -> {ok, Socket}              SO_REUSEADDR + SO_REUSEPORT, bound to
%%%                                                      0.0.0.0:Port, joined to the group on 127.0.0.1
%%%   recv(Socket, Secret, TimeoutMs) -> {ok, Node, Packet} | {error, timeout}
%%%
%%% Network safety: every destination must be in 127.0.0.0/8 or a multicast group
%%% (224.0.0.0/4, sent only through the loopback interface with TTL 1).
%%% 255.255.255.255 and every other address are refused with erlang:error({unsafe_gossip_addr, A}).
-module(testbed_gossip).
-behaviour(gen_server).

-export([heartbeat/2, plain/1, seal/2, seal/3, open/2]).
-export([start_link/1, start/1, stop/1, send_once/1, listen/1, recv/3, check_addr/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(PREFIX, "heartbeat::").
-define(DEFAULT_PORT, 45892).
-define(DEFAULT_ADDR, {239, 255, 0, 1}).
-define(LOOPBACK, {127, 0, 0, 1}).
%% Linux SOL_SOCKET / SO_REUSEPORT, for OTP 25 (OTP 26+ also has {reuseport, true}).
-define(SOL_SOCKET, 1).
-define(SO_REUSEPORT, 15).

%% ---------------------------------------------------------------- pure codec

%% @doc The datagram a node sends: plain, or sealed when a secret is given.
-spec heartbeat(node(), undefined | iodata()) -> binary().
heartbeat(Node, undefined) -> plain(Node);
heartbeat(Node, Secret) -> seal(plain(Node), Secret).

%% @doc `heartbeat::' followed by term_to_binary(#{node => Node}).
-spec plain(node()) -> binary().
plain(Node) when is_atom(Node) ->
    <<?PREFIX, (term_to_binary(#{node => Node}))/binary>>.

%% @doc Seals with a random IV.
-spec seal(binary(), iodata()) -> binary().
seal(Plain, Secret) -> seal(Plain, Secret, crypto:strong_rand_bytes(16)).

%% @doc Seals with the given IV: IV ++ AES-256-CBC(SHA-256(Secret), IV, PKCS#7(Plain)).
-spec seal(binary(), iodata(), <<_:128>>) -> binary().
seal(Plain, Secret, IV) when byte_size(IV) =:= 16 ->
    Cipher = crypto:crypto_one_time(aes_256_cbc, key(Secret), IV, pad(Plain),
                                    [{encrypt, true}, {padding, none}]),
    <<IV/binary, Cipher/binary>>.

%% @doc Decodes a datagram as libcluster does: with a secret every datagram of 16 bytes
%% or more is IV + ciphertext; without one only `heartbeat::' datagrams are read.
%% Untrusted input: any failure is `error'; payloads over 600 bytes are refused.
-spec open(binary(), undefined | iodata()) -> {ok, node()} | error.
open(<<?PREFIX, Etf/binary>>, undefined) -> decode_etf(Etf);
open(_, undefined) -> error;
open(<<IV:16/binary, Cipher/binary>>, Secret)
  when byte_size(Cipher) > 0, byte_size(Cipher) rem 16 =:= 0 ->
    try crypto:crypto_one_time(aes_256_cbc, key(Secret), IV, Cipher,
                               [{encrypt, false}, {padding, none}]) of
        Padded ->
            case unpad(Padded) of
                {ok, <<?PREFIX, Etf/binary>>} -> decode_etf(Etf);
                _ -> error
            end
    catch _:_ -> error
    end;
open(_, _) -> error.

key(Secret) -> crypto:hash(sha256, Secret).

pad(Bin) ->
    N = 16 - (byte_size(Bin) rem 16),
    <<Bin/binary, (binary:copy(<<N>>, N))/binary>>.

unpad(<<>>) -> error;
unpad(Bin) ->
    N = binary:last(Bin),
    Len = byte_size(Bin) - N,
    case N >= 1 andalso N =< 16 andalso Len >= 0 of
        true ->
            <<Data:Len/binary, Pad/binary>> = Bin,
            case Pad =:= binary:copy(<<N>>, N) of
                true -> {ok, Data};
                false -> error
            end;
        false -> error
    end.

%% A heartbeat names a node this VM may not know yet, so [safe] would refuse it; as
%% libcluster does, decode without it, but only small payloads (a name is < 256 bytes).
decode_etf(Etf) when byte_size(Etf) > 600 -> error;
decode_etf(Etf) ->
    try binary_to_term(Etf) of
        #{node := Node} when is_atom(Node) -> {ok, Node};
        _ -> error
    catch _:_ -> error
    end.

%% ---------------------------------------------------------------- safety

%% @doc Refuses any destination that could leave the machine.
-spec check_addr(inet:ip4_address()) -> ok.
check_addr({127, _, _, _}) -> ok;
check_addr({A, _, _, _}) when A >= 224, A =< 239 -> ok;
check_addr(Addr) -> erlang:error({unsafe_gossip_addr, Addr}).

%% ---------------------------------------------------------------- sender

%% @doc Starts a linked sender.
start_link(Opts) -> gen_server:start_link(?MODULE, opts(Opts), []).

%% @doc Starts an unlinked sender.
start(Opts) -> gen_server:start(?MODULE, opts(Opts), []).

%% @doc Stops a sender.
stop(Pid) -> gen_server:stop(Pid).

%% @doc Sends one heartbeat, without a process.
send_once(Opts0) ->
    Opts = opts(Opts0),
    {ok, S} = open_sender(),
    try send(S, Opts) after gen_udp:close(S) end.

opts(Opts) ->
    O = maps:merge(#{port => ?DEFAULT_PORT, addr => ?DEFAULT_ADDR, secret => undefined,
                     interval => {1, 5000}, node => node()}, Opts),
    ok = check_addr(maps:get(addr, O)),
    O.

open_sender() ->
    gen_udp:open(0, [binary, {ip, ?LOOPBACK}, {multicast_if, ?LOOPBACK},
                     {multicast_ttl, 1}, {multicast_loop, true}, {broadcast, true}]).

send(S, #{port := Port, addr := Addr, secret := Secret, node := Node}) ->
    ok = check_addr(Addr),
    _ = gen_udp:send(S, Addr, Port, heartbeat(Node, Secret)),
    ok.

init(Opts) ->
    {ok, S} = open_sender(),
    self() ! beat,
    {ok, Opts#{socket => S}}.

handle_call(_Req, _From, St) -> {reply, {error, unknown_call}, St}.
handle_cast(_Msg, St) -> {noreply, St}.

handle_info(beat, #{socket := S, interval := {Min, Max}} = St) ->
    send(S, St),
    erlang:send_after(Min + rand:uniform(max(1, Max - Min + 1)) - 1, self(), beat),
    {noreply, St};
handle_info(_, St) -> {noreply, St}.

terminate(_, #{socket := S}) -> gen_udp:close(S).

%% ---------------------------------------------------------------- receiver (tests)

%% @doc A socket that sees the heartbeats of every sender on this port (loopback).
listen(Opts) ->
    #{port := Port, addr := Addr} = maps:merge(#{port => ?DEFAULT_PORT, addr => ?DEFAULT_ADDR}, Opts),
    ok = check_addr(Addr),
    Base = [binary, {active, false}, {reuseaddr, true}, {ip, {0, 0, 0, 0}},
            {raw, ?SOL_SOCKET, ?SO_REUSEPORT, <<1:32/native>>}],
    Multicast = case Addr of
                    {A, _, _, _} when A >= 224 -> [{add_membership, {Addr, ?LOOPBACK}},
                                                   {multicast_loop, true}];
                    _ -> []
                end,
    gen_udp:open(Port, Base ++ Multicast).

%% @doc Waits for one datagram that decodes as a heartbeat; others are skipped.
recv(Socket, Secret, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    recv_until(Socket, Secret, Deadline).

recv_until(Socket, Secret, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    case gen_udp:recv(Socket, 0, Left) of
        {ok, {_Ip, _Port, Packet}} ->
            case open(Packet, Secret) of
                {ok, Node} -> {ok, Node, Packet};
                error -> recv_until(Socket, Secret, Deadline)
            end;
        {error, timeout} -> {error, timeout};
        {error, _} = E -> E
    end.
