%%% @doc The testbed's own tests: every call and cast of the gateway worker protocol
%%% replayed from ../shared/vectors/exesdb-real and compared with the real replies,
%%% record field sets against ../shared/vectors/term, PubSub delivery over pg, leader
%%% fail-over, replica lag, persistence, fault hooks and gossip.
%%%
%%% Run by `cargo xtask testbed test` (and `cargo xtask ci`): the runner is a hidden node
%%% on a private EPMD (ERL_EPMD_PORT); clusters are peer nodes with their own names and
%%% data folders under TESTBED_SCRATCH, always stopped by the fixtures.
-module(testbed_tests).
-include_lib("eunit/include/eunit.hrl").

-export([main/0]).

-define(STORE, reg_gh).
-define(SCOPE, 'Elixir.Phoenix.PubSub').
-define(GROUP, 'Elixir.ex_esdb_events.Adapter').

main() ->
    Result = eunit:test(?MODULE, [verbose]),
    erlang:halt(case Result of ok -> 0; _ -> 1 end).

%% ---------------------------------------------------------------- cluster fixture

ebin() -> os:getenv("TESTBED_EBIN", filename:dirname(code:which(testbed))).
scratch() -> os:getenv("TESTBED_SCRATCH", "/tmp/exesdb-testbed-eunit").

vectors() ->
    case os:getenv("TESTBED_VECTORS", "") of
        "" ->
            case os:getenv("EXESDB_GATER_REQUIRE_VECTORS", "") of
                V when V =:= ""; V =:= "0" -> undefined;
                _ -> error(vectors_required_but_missing)
            end;
        Dir -> Dir
    end.

start_cluster(Tag, N, Opts) ->
    Base = lists:flatten(io_lib:format("tb~s~p", [Tag, erlang:unique_integer([positive])])),
    Names = [list_to_atom(Base ++ "n" ++ integer_to_list(I) ++ "@127.0.0.1") || I <- lists:seq(0, N - 1)],
    Nodes = lists:foldl(fun(I, Acc) -> Acc ++ [start_node(Base, I, Names, Opts)] end,
                        [], lists:seq(0, N - 1)),
    #{base => Base, names => Names, nodes => Nodes, opts => Opts}.

start_node(Base, I, Names, Opts) ->
    Name = Base ++ "n" ++ integer_to_list(I),
    Dir = filename:join(scratch(), Name),
    {ok, Peer, Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true,
                                    args => ["-setcookie", atom_to_list(erlang:get_cookie()),
                                             "-pa", ebin(),
                                             "-kernel", "inet_dist_use_interface", "{127,0,0,1}"]}),
    Config = maps:merge(#{stores => [?STORE], workers_per_store => 2, data_dir => Dir,
                          seeds => lists:sublist(Names, I + 1)}, Opts),
    ok = erpc:call(Node, testbed, boot, [Config], 60000),
    {Node, Peer, Dir}.

restart_node(#{base := Base, names := Names, opts := Opts, nodes := Nodes} = C, I) ->
    New = start_node(Base, I, Names, Opts#{seeds => Names}),
    C#{nodes => lists:sublist(Nodes, I) ++ [New] ++ lists:nthtail(I + 1, Nodes)}.

stop_cluster(#{nodes := Nodes}) ->
    [catch peer:stop(P) || {_, P, _} <- Nodes],
    ok.

node_of(#{nodes := Nodes}, I) -> element(1, lists:nth(I + 1, Nodes)).
dir_of(#{nodes := Nodes}, I) -> element(3, lists:nth(I + 1, Nodes)).

workers(Node) -> testbed:worker_pids(Node, ?STORE).

worker_on(Node) ->
    hd([P || {{gateway_worker, ?STORE, N, _}, P} <- erpc:call(Node, 'Elixir.Swarm', registered, []),
             N =:= Node]).

leader_node(Node) ->
    case erpc:call(Node, ra_leaderboard, lookup_leader, [?STORE]) of
        {?STORE, L} -> L;
        undefined -> undefined
    end.

%% Bounded wait for a condition that another node makes true (no fixed sleeps).
await(Fun, What) -> await(Fun, What, 200).
await(_Fun, What, 0) -> error({timeout_waiting_for, What});
await(Fun, What, N) ->
    case catch Fun() of
        true -> ok;
        _ -> receive after 25 -> await(Fun, What, N - 1) end
    end.

new_event(Id, Data) ->
    #{'__struct__' => 'Elixir.ExESDB.Schema.NewEvent', '__unknown_fields__' => [],
      event_id => Id, event_type => <<"Tested:v1">>, data_content_type => 1,
      metadata_content_type => 1, data => Data, metadata => nil}.

%% ---------------------------------------------------------------- vectors helpers

read_etf(Dir, File) ->
    {ok, B} = file:read_file(filename:join(Dir, File)),
    binary_to_term(B).

%% Replaces what differs on every run: pids, references, timestamps, node names, paths.
norm(P) when is_pid(P) -> pid;
norm(R) when is_reference(R) -> ref;
norm(#{'__struct__' := 'Elixir.DateTime'} = D) -> {datetime, lists:sort(maps:keys(D))};
norm(M) when is_map(M) ->
    maps:from_list([{norm(K), norm_field(K, V)} || {K, V} <- maps:to_list(M)]);
norm(L) when is_list(L) -> norm_list(L);
norm(T) when is_tuple(T) -> list_to_tuple([norm(E) || E <- tuple_to_list(T)]);
norm(A) when is_atom(A) ->
    case lists:suffix("@127.0.0.1", atom_to_list(A)) of
        true -> node;
        false -> A
    end;
norm(X) -> X.

norm_list([]) -> [];
norm_list([H | T]) when is_list(T) -> [norm(H) | norm_list(T)];
norm_list([H | T]) -> [norm(H) | norm(T)].

norm_field(created_epoch, V) when is_integer(V) -> epoch;
norm_field(data_dir, V) when is_binary(V) -> dir;
norm_field(_, V) -> norm(V).

%% ---------------------------------------------------------------- gossip (no cluster)

gossip_vectors_test_() ->
    case vectors() of
        undefined -> {"skipped: no vectors", fun() -> ok end};
        V ->
            Real = filename:join(V, "exesdb-real"),
            [fun() ->
                     {ok, P} = file:read_file(filename:join(Real, "gossip_heartbeat_plain_" ++ integer_to_list(I) ++ ".bin")),
                     ?assertEqual({ok, 'client@127.0.0.1'}, testbed_gossip:open(P, undefined)),
                     %% Same term; OTP 27 wrote its atoms as SMALL_ATOM_UTF8_EXT, OTP 25 ATOM_EXT.
                     <<"heartbeat::", Etf/binary>> = P,
                     <<"heartbeat::", Mine/binary>> = testbed_gossip:plain('client@127.0.0.1'),
                     ?assertEqual(binary_to_term(Etf), binary_to_term(Mine)),
                     {ok, S} = file:read_file(filename:join(Real, "gossip_heartbeat_secret_" ++ integer_to_list(I) ++ ".bin")),
                     ?assertEqual({ok, 'client@127.0.0.1'}, testbed_gossip:open(S, <<"test-secret">>)),
                     ?assertEqual(error, testbed_gossip:open(S, <<"wrong">>)),
                     ?assertEqual(error, testbed_gossip:open(S, undefined)),
                     <<IV:16/binary, _/binary>> = S,
                     {ok, Plain} = file:read_file(filename:join(Real, "gossip_heartbeat_secret_" ++ integer_to_list(I) ++ ".plaintext.bin")),
                     ?assertEqual(S, testbed_gossip:seal(Plain, "test-secret", IV))
             end || I <- lists:seq(1, 5)]
    end.

gossip_safety_test() ->
    ?assertError({unsafe_gossip_addr, {255, 255, 255, 255}},
                 testbed_gossip:send_once(#{addr => {255, 255, 255, 255}})),
    ?assertError({unsafe_gossip_addr, {10, 0, 0, 1}}, testbed_gossip:check_addr({10, 0, 0, 1})),
    ?assertEqual(ok, testbed_gossip:check_addr({127, 255, 255, 255})),
    ?assertEqual(ok, testbed_gossip:check_addr({239, 255, 0, 1})).

gossip_loopback_multicast_test() ->
    Port = 20000 + rand:uniform(20000),
    {ok, L1} = testbed_gossip:listen(#{port => Port}),
    {ok, L2} = testbed_gossip:listen(#{port => Port}),
    {ok, Pid} = testbed_gossip:start(#{port => Port, secret => <<"s3">>, node => 'x@127.0.0.1',
                                       interval => {1, 50}}),
    try
        ?assertMatch({ok, 'x@127.0.0.1', _}, testbed_gossip:recv(L1, <<"s3">>, 5000)),
        ?assertMatch({ok, 'x@127.0.0.1', _}, testbed_gossip:recv(L2, <<"s3">>, 5000))
    after
        testbed_gossip:stop(Pid), gen_udp:close(L1), gen_udp:close(L2)
    end.

%% ---------------------------------------------------------------- records vs term vectors

term_vectors_test_() ->
    case vectors() of
        undefined -> {"skipped: no vectors", fun() -> ok end};
        V ->
            T = filename:join(V, "term"),
            fun() ->
                    Real = read_etf(T, "event_record.etf"),
                    Mine = testbed_rec:event_record(<<"s">>, 0, read_etf(T, "new_event.etf"), 1),
                    %% term/ was written without '__unknown_fields__'; ExESDB v0.11 sends it.
                    ?assertEqual(lists:sort(maps:keys(Real) ++ ['__unknown_fields__']),
                                 lists:sort(maps:keys(Mine))),
                    ?assertEqual(lists:sort(maps:keys(read_etf(T, "datetime.etf"))),
                                 lists:sort(maps:keys(testbed_rec:datetime(1)))),
                    Dt = read_etf(T, "datetime.etf"),
                    Us = maps:get(created_epoch, Real),
                    ?assertEqual(maps:get(created, Real), testbed_rec:datetime(Us)),
                    ?assertEqual(Dt, testbed_rec:datetime(Us))
            end
    end.

term_protocol_test_() ->
    case vectors() of
        undefined -> {"skipped: no vectors", fun() -> ok end};
        V ->
            {setup, fun() -> start_cluster("t", 1, #{stores => [my_store]}) end, fun stop_cluster/1,
             fun(C) -> {"term/ gen_call and gen_cast messages served with the reply shapes of term/",
                        {timeout, 60, fun() -> term_protocol(C, filename:join(V, "term")) end}} end}
    end.

%% The requests inside term/'s '$gen_call' envelopes, sent to a worker; replies compared
%% by shape with term/'s reply envelopes.
term_protocol(C, T) ->
    Node = node_of(C, 0),
    [W | _] = testbed:worker_pids(Node, my_store),
    Req = fun(F) -> {'$gen_call', {_, _}, R} = read_etf(T, F), R end,
    Reply = fun(F) -> {_Ref, R} = read_etf(T, F), R end,
    {ok, V0} = gen_server:call(W, Req("gen_call_append.etf")),
    ?assertMatch({ok, N} when is_integer(N), Reply("reply_ok_version.etf")),
    ?assertEqual(0, V0),
    {error, {wrong_expected_version, 0}} = gen_server:call(W, Req("gen_call_append_expected.etf")),
    ?assertMatch({error, {wrong_expected_version, N}} when is_integer(N),
                 Reply("reply_wrong_expected_version.etf")),
    {ok, [Rec]} = gen_server:call(W, Req("gen_call_get_events.etf")),
    Real = read_etf(T, "event_record.etf"),
    ?assertEqual(lists:sort(maps:keys(Real) ++ ['__unknown_fields__']), lists:sort(maps:keys(Rec))),
    {append_events, my_store, _, [Sent]} = Req("gen_call_append.etf"),
    ?assertEqual(maps:get(data, Sent), maps:get(data, Rec)),
    {'$gen_cast', Cast} = read_etf(T, "cast_save_subscription.etf"),
    gen_server:cast(W, Cast),
    {ok, Subs} = gen_server:call(W, {get_subscriptions, my_store}),
    ?assertMatch([#{type := by_stream, selector := <<"$user-1">>,
                    subscription_name := <<"user_subscription">>, start_from := 0}],
                 maps:values(Subs)),
    %% The worker survived all of it, and Swarm lists names of the same shape as term/'s.
    ?assert(lists:member(W, testbed:worker_pids(Node, my_store))),
    {_, RealNames} = read_etf(T, "swarm_registered_reply.etf"),
    [{{gateway_worker, _, _, _}, _} | _] = RealNames,
    ?assert(lists:any(fun({{gateway_worker, my_store, N, I}, P}) ->
                              N =:= Node andalso is_integer(I) andalso I >= 1 andalso I =< 10000
                                  andalso is_pid(P);
                         (_) -> false
                      end, erpc:call(Node, 'Elixir.Swarm', registered, []))).

%% ---------------------------------------------------------------- protocol vs exesdb-real

protocol_test_() ->
    case vectors() of
        undefined -> {"skipped: no vectors", fun() -> ok end};
        V ->
            {setup, fun() -> start_cluster("p", 3, #{}) end, fun stop_cluster/1,
             fun(C) -> {"every exesdb-real request replayed, replies and exits as captured", {timeout, 120, fun() -> replay_all(C, filename:join(V, "exesdb-real")) end}} end}
    end.

%% Exact after norm/1: the same values as the real cluster gave in the same session.
-define(EXACT, ["01", "02", "03", "04", "06", "08", "09", "10", "11", "12", "13", "14", "15",
                "16", "20", "21", "22", "23", "24", "30"]).

replay_all(C, Dir) ->
    {ok, Files} = file:list_dir(Dir),
    Requests = lists:sort([F || F <- Files, lists:suffix(".request.etf", F)]),
    Node = node_of(C, 1),
    ?assert(lists:keymember(ex_esdb, 1, erpc:call(Node, application, which_applications, []))),
    Checked = [replay(Node, Dir, F) || F <- Requests],
    ?assert(length(Checked) >= 30),
    %% Crashed workers came back under new names: 2 workers per node again.
    await(fun() -> length(workers(Node)) =:= 6 end, six_workers).

replay(Node, Dir, File) ->
    Base = lists:sublist(File, length(File) - length(".request.etf")),
    Prefix = lists:sublist(Base, 2),
    Req = read_etf(Dir, File),
    W = case Prefix of
            "24" -> worker_on(node_of_other(Node));
            _ -> worker_on(Node)
        end,
    case element(1, Req) of
        Cast when Cast =:= save_subscription; Cast =:= record_snapshot ->
            gen_server:cast(W, Req),
            %% The worker handles messages in order: a call after the cast returns once
            %% the cast's write is committed.
            {ok, _} = gen_server:call(W, {get_version, ?STORE, <<"sync">>}),
            {Base, cast};
        _ ->
            Got = try {reply, gen_server:call(W, Req, 15000)}
                  catch exit:{Reason, {gen_server, call, _}} -> {exit, Reason}
                  end,
            check(Base, Prefix, Dir, Req, Got)
    end.

node_of_other(Node) -> hd([N || N <- erpc:call(Node, erlang, nodes, []), N =/= Node]).

check(Base, Prefix, Dir, Req, {reply, Got}) ->
    Real = read_etf(Dir, Base ++ ".reply.etf"),
    case lists:member(Prefix, ?EXACT) of
        true when Prefix =:= "01" ->
            {ok, L1} = norm(Real), {ok, L2} = norm(Got),
            ?assertEqual({Base, lists:sort(L1)}, {Base, lists:sort(L2)});
        true -> ?assertEqual({Base, norm(Real)}, {Base, norm(Got)});
        false -> check_shape(Prefix, Base, Real, Got)
    end,
    {Base, Req};
check(Base, Prefix, Dir, _Req, {exit, Reason}) ->
    RealExit = read_etf(Dir, Base ++ ".exit.etf"),
    case Prefix of
        "35" ->
            {{function_clause, [{M, F, [RReq, _, RState], _} | _]}, _} = RealExit,
            {function_clause, [{M2, F2, [MReq, _, MState], _} | _]} = Reason,
            ?assertEqual({M, F, RReq}, {M2, F2, MReq}),
            ?assertEqual([K || {K, _} <- RState], [K || {K, _} <- MState]);
        _ ->
            {RealReason, _} = RealExit,
            ?assertEqual({Base, RealReason}, {Base, Reason})
    end,
    {Base, exit}.

%% Where the real session had more streams/subscriptions than its request files show.
check_shape("17", Base, {ok, RealStreams}, {ok, Mine}) ->
    ?assertEqual({Base, []}, {Base, Mine -- RealStreams}),
    ?assertEqual(lists:sort(Mine), Mine);
check_shape("18", Base, {ok, RealSubs}, {ok, Mine}) ->
    ?assert(map_size(Mine) >= 4),
    [?assertEqual({Base, K, norm(maps:get(K, RealSubs))}, {Base, K, norm(V)})
     || {K, V} <- maps:to_list(Mine)];
check_shape("25", Base, {ok, Real}, {ok, Mine}) ->
    ?assertEqual({Base, lists:sort(maps:keys(Real))}, {Base, lists:sort(maps:keys(Mine))}),
    ?assertEqual(maps:get(enum, Real), maps:get(enum, Mine));
check_shape(_, Base, Real, Mine) ->
    ?assertEqual({Base, norm(Real)}, {Base, norm(Mine)}).

%% ---------------------------------------------------------------- pg / Phoenix.PubSub delivery

pubsub_test_() ->
    {setup, fun() -> start_cluster("s", 3, #{}) end, fun stop_cluster/1,
     fun(C) -> {"pg discover/sync and forward_to_local delivery, persistent resume", {timeout, 60, fun() -> pubsub(C) end}} end}.

%% The gateway's side of WIRE.md §4, done by hand: discover, sync, then forward_to_local.
pubsub(C) ->
    Node = node_of(C, 2),
    Self = self(),
    Member = spawn_link(fun() -> collect(Self) end),
    %% As the gateway must: take part in pg with the scope of every node (only the
    %% store leader's emitter broadcasts, to the members its own scope knows).
    [join_scope(N, Self, Member) || N <- names_of(C)],
    W = worker_on(Node),
    Remote = spawn(fun() -> receive stop -> ok end end),
    gen_server:cast(W, {save_subscription, ?STORE, by_stream, <<"$all">>, <<"all-events">>, 0, nil}),
    gen_server:cast(W, {save_subscription, ?STORE, by_event_type, <<"Typed:v1">>, <<"typed">>, 0, nil}),
    gen_server:cast(W, {save_subscription, ?STORE, by_stream, <<"$s-remote">>, <<"remote">>, 0, Remote}),
    {ok, 1} = gen_server:call(W, {append_events, ?STORE, <<"s-1">>,
                                  [new_event(<<"e1">>, #{<<"k">> => 1}),
                                   (new_event(<<"e2">>, <<"raw">>))#{event_type => <<"Typed:v1">>}]}),
    Got = [receive {got, {forward_to_local, T, {events, [R]}, ?SCOPE}} -> {T, maps:get(event_id, R)}
           after 5000 -> error({missing_delivery, I})
           end || I <- [1, 2, 3]],
    ?assertEqual(lists:sort([{<<"reg_gh:$all">>, <<"e1">>}, {<<"reg_gh:$all">>, <<"e2">>},
                             {<<"reg_gh:Typed:v1">>, <<"e2">>}]), lists:sort(Got)),
    %% A subscriber pid on another node receives nothing (as in ExESDB v0.11).
    {ok, 0} = gen_server:call(W, {append_events, ?STORE, <<"s-remote">>, [new_event(<<"e3">>, 1)]}),
    receive {got, {forward_to_local, <<"reg_gh:$all">>, {events, [#{event_id := <<"e3">>}]}, _}} -> ok
    after 5000 -> error(no_all_delivery)
    end,
    receive Unexpected -> error({unexpected, Unexpected}) after 300 -> ok end,
    %% Persistent subscription: replay from start_from, ack moves it, re-save resumes.
    {ok, 2} = gen_server:call(W, {append_events, ?STORE, <<"p">>,
                                  [new_event(<<"p0">>, 0), new_event(<<"p1">>, 1), new_event(<<"p2">>, 2)]}),
    drain_all(),
    gen_server:cast(W, {save_subscription, ?STORE, by_stream, <<"$p">>, <<"pers">>, 0, nil}),
    ?assertEqual([<<"p0">>, <<"p1">>, <<"p2">>], topic_ids(<<"reg_gh:$p">>, 3)),
    {ok, [_, E1, _]} = gen_server:call(W, {get_events, ?STORE, <<"p">>, 0, 3, forward}),
    gen_server:cast(W, {ack_event, ?STORE, <<"pers">>, nil, E1}),
    {ok, Subs} = gen_server:call(W, {get_subscriptions, ?STORE}),
    [Pers] = [S || S = #{subscription_name := <<"pers">>} <- maps:values(Subs)],
    ?assertEqual(2, maps:get(start_from, Pers)),
    gen_server:cast(W, {save_subscription, ?STORE, by_stream, <<"$p">>, <<"pers">>, 0, nil}),
    ?assertEqual([<<"p2">>], topic_ids(<<"reg_gh:$p">>, 1)),
    %% Past the stream's end: nothing to replay, and the save still works.
    gen_server:cast(W, {save_subscription, ?STORE, by_stream, <<"$p">>, <<"ahead">>, 10, nil}),
    {ok, Subs3} = gen_server:call(W, {get_subscriptions, ?STORE}),
    [_] = [S || S = #{subscription_name := <<"ahead">>} <- maps:values(Subs3)],
    receive {got, {forward_to_local, <<"reg_gh:$p">>, _, _}} = Early -> error({replayed, Early})
    after 300 -> ok
    end,
    %% The message shape equals the captured one.
    case vectors() of
        undefined -> ok;
        V ->
            Real = read_etf(filename:join(V, "exesdb-real"), "07e_phoenix_pubsub_ex_esdb_events_message.etf"),
            {ok, [Mine]} = gen_server:call(W, {get_events, ?STORE, <<"p">>, 0, 1, forward}),
            {events, [RealRec]} = Real,
            ?assertEqual(lists:sort(maps:keys(RealRec)), lists:sort(maps:keys(Mine)))
    end,
    gen_server:cast(W, {remove_subscription, ?STORE, by_stream, <<"$all">>, <<"all-events">>}),
    {ok, Subs2} = gen_server:call(W, {get_subscriptions, ?STORE}),
    ?assertEqual([], [S || S = #{subscription_name := <<"all-events">>} <- maps:values(Subs2)]),
    unlink(Member), exit(Member, kill), Remote ! stop.

names_of(#{nodes := Nodes}) -> [N || {N, _, _} <- Nodes].

join_scope(Node, Self, Member) ->
    {?SCOPE, Node} ! {discover, Self},
    Their = receive {'$gen_cast', {sync, TheirScope, Groups}} when node(TheirScope) =:= Node ->
                    [{?GROUP, [M]}] = Groups,
                    ?assertEqual(Node, node(M)),
                    TheirScope
            after 5000 -> error(no_sync)
            end,
    receive {discover, Their} -> ok after 5000 -> error(no_discover_back) end,
    gen_server:cast(Their, {sync, Self, [{?GROUP, [Member]}]}),
    await(fun() -> lists:member(Member, erpc:call(Node, pg, get_members, [?SCOPE, ?GROUP])) end,
          member_joined).

collect(Parent) ->
    receive M -> Parent ! {got, M}, collect(Parent) end.

drain_all() -> receive {got, _} -> drain_all() after 200 -> ok end.

topic_ids(Topic, N) ->
    [receive {got, {forward_to_local, Topic, {events, [R]}, ?SCOPE}} -> maps:get(event_id, R)
     after 5000 -> error({missing, Topic, I})
     end || I <- lists:seq(1, N)].

%% ---------------------------------------------------------------- fail-over and persistence

failover_test_() ->
    {setup, fun() -> start_cluster("f", 3, #{}) end, fun stop_cluster/1,
     fun(C) -> {"failover keeps every acked append exactly once; restarts catch up", {timeout, 120, fun() -> failover(C) end}} end}.

append_n(Node, Stream, From, To) ->
    [begin
         {ok, _} = gen_server:call(lists:nth(rand:uniform(length(workers(Node))), workers(Node)),
                                   {append_events, ?STORE, Stream,
                                    [new_event(iolist_to_binary(["id-", integer_to_list(I)]), I)]}),
         I
     end || I <- lists:seq(From, To)].

failover(C0) ->
    N0 = node_of(C0, 0),
    Leader = leader_node(N0),
    ?assertEqual(N0, Leader),
    Acked1 = append_n(node_of(C0, 2), <<"f">>, 0, 19),
    %% Kill a follower: nothing is lost, writes go on (2 of 3 is a majority).
    Follower = node_of(C0, 2),
    kill(Follower),
    Acked2 = append_n(N0, <<"f">>, 20, 29),
    %% It comes back and catches up.
    C1 = restart_node(C0, 2),
    {ok, 29} = gen_server:call(worker_on(node_of(C1, 2)), {get_version, ?STORE, <<"f">>}),
    %% Kill the leader: another node takes over within seconds.
    kill(N0),
    N1 = node_of(C1, 1),
    await(fun() -> lists:member(leader_node(N1), [N1, node_of(C1, 2)]) end, new_leader),
    Acked3 = append_n(N1, <<"f">>, 30, 39),
    All = Acked1 ++ Acked2 ++ Acked3,
    {ok, V} = gen_server:call(worker_on(N1), {get_version, ?STORE, <<"f">>}),
    ?assertEqual(length(All) - 1, V),
    [begin
         ?assertEqual(ok, testbed:check_log(dir_of(C1, I), ?STORE)),
         %% Every acknowledged append is in the survivors' logs exactly once.
         Ids = [Id || {<<"f">>, _, Id} <- testbed:stored_events(dir_of(C1, I), ?STORE)],
         ?assertEqual(lists:sort([iolist_to_binary(["id-", integer_to_list(J)]) || J <- All]), lists:sort(Ids))
     end || I <- [1, 2]],
    %% A restarted node replays its log and catches up with the leader.
    C2 = restart_node(C1, 0),
    N0b = node_of(C2, 0),
    {ok, V} = gen_server:call(worker_on(N0b), {get_version, ?STORE, <<"f">>}),
    ?assertEqual(ok, testbed:check_log(dir_of(C2, 0), ?STORE)),
    ?assertEqual(length(All), length(testbed:stored_events(dir_of(C2, 0), ?STORE))),
    %% Only one node of three left: no majority, so no write is acknowledged (as in Ra).
    Lead = leader_node(N1),
    [Other1, Other2] = [I || I <- [0, 1, 2], node_of(C2, I) =/= Lead],
    kill(node_of(C2, Other1)),
    kill(node_of(C2, Other2)),
    ?assertMatch({error, _}, gen_server:call(worker_on(Lead), {append_events, ?STORE, <<"f">>,
                                                               [new_event(<<"lonely">>, 0)]}, 20000)),
    %% A second node back: a majority again, writes are acknowledged.
    C3 = restart_node(C2, Other1),
    {ok, _} = gen_server:call(worker_on(Lead), {append_events, ?STORE, <<"f">>, [new_event(<<"back">>, 0)]}),
    Health = gen_server:call(worker_on(node_of(C3, Other1)), {verify_cluster_consistency, ?STORE}),
    ?assertMatch({ok, #{status := consistent}}, Health),
    [?assertMatch({ok, #{}}, gen_server:call(worker_on(node_of(C3, Other1)), {Check, ?STORE}))
     || Check <- [quick_health_check, verify_membership_consensus, check_raft_log_consistency]],
    stop_cluster(C3).

kill(Node) ->
    erlang:monitor_node(Node, true),
    catch erpc:call(Node, testbed_fault, kill_node, [], 2000),
    receive {nodedown, Node} -> ok after 10000 -> error({still_up, Node}) end.

concurrent_failover_test_() ->
    {setup, fun() -> start_cluster("c", 3, #{}) end, fun stop_cluster/1,
     fun(C) -> {"leader killed under concurrent appends: acked ones kept, none twice",
                {timeout, 120, fun() -> concurrent_failover(C) end}} end}.

%% Writers append through random workers of the two nodes that survive while the leader
%% is killed; every acknowledged event must be in each survivor's log exactly once.
concurrent_failover(C) ->
    N0 = node_of(C, 0), N1 = node_of(C, 1), N2 = node_of(C, 2),
    ?assertEqual(N0, leader_node(N1)),
    Self = self(),
    Writer = fun(W) ->
                     fun Loop(I, Acked) ->
                             receive stop -> Self ! {acked, W, Acked}
                             after 0 ->
                                     Id = iolist_to_binary(io_lib:format("w~p-~p", [W, I])),
                                     Node = lists:nth(1 + I rem 2, [N1, N2]),
                                     Pids = [P || {{gateway_worker, ?STORE, Nd, _}, P}
                                                      <- erpc:call(Node, 'Elixir.Swarm', registered, []), Nd =:= Node],
                                     Pid = lists:nth(rand:uniform(length(Pids)), Pids),
                                     R = catch gen_server:call(Pid, {append_events, ?STORE,
                                                                     iolist_to_binary(io_lib:format("cf-~p", [W])),
                                                                     [new_event(Id, I)]}, 15000),
                                     case R of
                                         {ok, _} -> Loop(I + 1, [Id | Acked]);
                                         _ -> Loop(I + 1, Acked)
                                     end
                             end
                     end
             end,
    Ws = [spawn_link(fun() -> (Writer(W))(0, []) end) || W <- lists:seq(1, 4)],
    %% Let some appends through, then kill the leader mid-stream.
    await(fun() -> length(testbed:stored_events(dir_of(C, 1), ?STORE)) >= 40 end, some_appends),
    kill(N0),
    await(fun() -> leader_node(N1) =/= undefined andalso leader_node(N1) =/= N0 end, new_leader),
    Before = length(testbed:stored_events(dir_of(C, 1), ?STORE)),
    await(fun() -> length(testbed:stored_events(dir_of(C, 1), ?STORE)) >= Before + 40 end, more_appends),
    [W ! stop || W <- Ws],
    Acked = lists:append([receive {acked, W, A} -> A after 30000 -> error(writer_stuck) end
                          || W <- lists:seq(1, 4)]),
    ?assert(length(Acked) >= 80),
    [begin
         ?assertEqual(ok, testbed:check_log(dir_of(C, I), ?STORE)),
         Ids = [Id || {_, _, Id} <- testbed:stored_events(dir_of(C, I), ?STORE)],
         ?assertEqual(length(Ids), length(lists:usort(Ids))),
         ?assertEqual([], Acked -- Ids)
     end || I <- [1, 2]].

%% ---------------------------------------------------------------- lag

lag_test_() ->
    {setup, fun() -> start_cluster("l", 2, #{lag_ms => 300}) end, fun stop_cluster/1,
     fun(C) -> {"lagging follower gives stale reads and rejections", {timeout, 60, fun() -> lag(C) end}} end}.

lag(C) ->
    Leader = node_of(C, 0),
    Follower = node_of(C, 1),
    {ok, 0} = gen_server:call(worker_on(Leader), {append_events, ?STORE, <<"lag">>, [new_event(<<"l0">>, 0)]}),
    %% The follower has it on disk but not yet readable: a stale read and a stale rejection.
    ?assertEqual({ok, -1}, gen_server:call(worker_on(Follower), {get_version, ?STORE, <<"lag">>})),
    ?assertEqual({error, {wrong_expected_version, -1}},
                 gen_server:call(worker_on(Follower), {append_events, ?STORE, <<"lag">>, 0, [new_event(<<"l1">>, 1)]})),
    ?assertEqual(1, length(testbed:stored_events(dir_of(C, 1), ?STORE))),
    await(fun() -> {ok, 0} =:= gen_server:call(worker_on(Follower), {get_version, ?STORE, <<"lag">>}) end,
          follower_caught_up).

%% ---------------------------------------------------------------- edges, two stores

edges_test_() ->
    {setup, fun() -> start_cluster("e", 1, #{stores => [reg_gh, second]}) end, fun stop_cluster/1,
     fun(C) -> {"read ranges, empty appends, two stores", {timeout, 60, fun() -> edges(C) end}} end}.

edges(C) ->
    Node = node_of(C, 0),
    W = worker_on(Node),
    Read = fun(S, Start, Count, Dir) ->
                   {ok, L} = gen_server:call(W, {get_events, S, <<"e">>, Start, Count, Dir}),
                   [N || #{event_number := N} <- L]
           end,
    ?assertEqual([], Read(reg_gh, 0, 10, backward)),
    {ok, 2} = gen_server:call(W, {append_events, ?STORE, <<"e">>, [new_event(<<"a">>, 0), new_event(<<"b">>, 1), new_event(<<"c">>, 2)]}),
    ?assertEqual([], Read(reg_gh, 5, 10, forward)),
    ?assertEqual([], Read(reg_gh, 0, 0, forward)),
    ?assertEqual([0, 1, 2], Read(reg_gh, 0, 100, forward)),
    ?assertEqual([2], Read(reg_gh, 9, 8, backward)),
    ?assertEqual([2, 1, 0], Read(reg_gh, 2, 10, backward)),
    ?assertEqual([1, 0], Read(reg_gh, 1, 5, backward)),
    ?assertEqual({ok, 2}, gen_server:call(W, {append_events, ?STORE, <<"e">>, []})),
    %% Stores are separate; list_stores has one entry per node and store.
    ?assertEqual({ok, -1}, gen_server:call(W, {get_version, second, <<"e">>})),
    {ok, Stores} = gen_server:call(W, {list_stores}),
    ?assertEqual([reg_gh, second], lists:sort([S || #{store := #{store_id := S}} <- Stores])),
    ?assertEqual(2, length([P || {{gateway_worker, second, _, _}, P} <- erpc:call(Node, 'Elixir.Swarm', registered, [])])),
    ?assertMatch({error, {store_not_found, nope}}, gen_server:call(W, {quick_health_check, nope})).

%% ---------------------------------------------------------------- fault hooks

faults_test_() ->
    {setup, fun() -> start_cluster("h", 1, #{workers_per_store => 1}) end, fun stop_cluster/1,
     fun(C) -> {"fault hooks: slow, crash_next, unregister; function_clause crash", {timeout, 60, fun() -> faults(C) end}} end}.

faults(C) ->
    Node = node_of(C, 0),
    [W] = workers(Node),
    1 = erpc:call(Node, testbed_fault, slow_worker, [W, 200]),
    T0 = erlang:monotonic_time(millisecond),
    {ok, -1} = gen_server:call(W, {get_version, ?STORE, <<"x">>}),
    ?assert(erlang:monotonic_time(millisecond) - T0 >= 200),
    1 = erpc:call(Node, testbed_fault, clear, [W]),
    1 = erpc:call(Node, testbed_fault, crash_next, [W]),
    ?assertExit({testbed_fault_crash, _}, gen_server:call(W, {get_version, ?STORE, <<"x">>})),
    await(fun() -> [W2] = workers(Node), W2 =/= W end, restarted_worker),
    [W3] = workers(Node),
    ok = erpc:call(Node, testbed_fault, unregister_worker, [W3]),
    ?assertEqual([], workers(Node)),
    ?assert(erpc:call(Node, erlang, is_process_alive, [W3])),
    %% An unknown request crashes the worker with function_clause; it comes back.
    ?assertExit({{function_clause, _}, _}, gen_server:call(W3, {no_such_request, ?STORE})),
    await(fun() -> length(workers(Node)) =:= 1 end, worker_back).

%% ---------------------------------------------------------------- terms and truncation

match_index_test() ->
    T1 = {1, a}, T2 = {2, b}, T3 = {3, c},
    ?assertEqual(5, testbed_store:match_index([{1, T1}], 5, [{1, T1}], 5)),
    ?assertEqual(3, testbed_store:match_index([{1, T1}], 3, [{1, T1}], 7)),
    %% A kept writing in T1 after 4 (never acknowledged); B's leader started T2 at 5.
    ?assertEqual(4, testbed_store:match_index([{1, T1}], 6, [{5, T2}, {1, T1}], 8)),
    ?assertEqual(0, testbed_store:match_index([{1, T1}], 3, [{1, T2}], 3)),
    ?assertEqual(0, testbed_store:match_index([], 0, [{1, T1}], 3)),
    ?assertEqual(6, testbed_store:match_index([{5, T2}, {1, T1}], 6,
                                              [{10, T3}, {5, T2}, {1, T1}], 12)).

frame(F) ->
    B = term_to_binary(F),
    <<(byte_size(B)):32, B/binary>>.

log_of(C, I) -> testbed_store:read_frames(testbed_store:log_path(dir_of(C, I), ?STORE)).

truncation_test_() ->
    {setup, fun() -> start_cluster("d", 3, #{}) end, fun stop_cluster/1,
     fun(C) -> {"a restarted old leader truncates the entries the new leader does not have",
                {timeout, 60, fun() -> truncation(C) end}} end}.

truncation(C) ->
    N0 = node_of(C, 0), N1 = node_of(C, 1),
    {ok, 2} = gen_server:call(worker_on(N0), {append_events, ?STORE, <<"d">>,
                                              [new_event(<<"d0">>, 0), new_event(<<"d1">>, 1), new_event(<<"d2">>, 2)]}),
    kill(N0),
    %% What a leader killed in the middle of a write holds: entries of its term written
    %% to its own log and acknowledged to nobody. Here an event at a number the next
    %% leader gives to another one, a stream and a subscription nobody else has.
    Path = testbed_store:log_path(dir_of(C, 0), ?STORE),
    {Last, Term, _} = lists:last(testbed_store:read_frames(Path)),
    Ghost = fun(S, N, Id) -> {event, S, testbed_rec:event_record(S, N, new_event(Id, 0), 1)} end,
    SubKey = testbed_rec:subscription_key(by_stream, <<"$d">>, <<"ghost">>, ?STORE),
    ok = file:write_file(Path, [frame({Last + 1, Term, Ghost(<<"d">>, 3, <<"ghost-d3">>)}),
                                frame({Last + 2, Term, Ghost(<<"ghost">>, 0, <<"ghost-0">>)}),
                                frame({Last + 3, Term, {subscription, SubKey,
                                                        #{type => by_stream, selector => <<"$d">>,
                                                          subscription_name => <<"ghost">>,
                                                          start_from => 0, subscriber => nil}}})],
                         [append]),
    await(fun() -> lists:member(leader_node(N1), [N1, node_of(C, 2)]) end, new_leader),
    {ok, 4} = gen_server:call(worker_on(N1), {append_events, ?STORE, <<"d">>,
                                              [new_event(<<"d3">>, 3), new_event(<<"d4">>, 4)]}),
    C1 = restart_node(C, 0),
    N0b = node_of(C1, 0),
    %% The log file is now a copy of the new leader's, and so is the replica.
    ?assertEqual(log_of(C1, 1), log_of(C1, 0)),
    ?assertEqual(ok, testbed:check_log(dir_of(C1, 0), ?STORE)),
    W0 = worker_on(N0b),
    {ok, Rs} = gen_server:call(W0, {get_events, ?STORE, <<"d">>, 0, 10, forward}),
    ?assertEqual([<<"d0">>, <<"d1">>, <<"d2">>, <<"d3">>, <<"d4">>], [maps:get(event_id, R) || R <- Rs]),
    ?assertEqual({ok, -1}, gen_server:call(W0, {get_version, ?STORE, <<"ghost">>})),
    {ok, Streams} = gen_server:call(W0, {get_streams, ?STORE}),
    ?assertNot(lists:member(<<"ghost">>, Streams)),
    ?assertEqual({ok, #{}}, gen_server:call(W0, {get_subscriptions, ?STORE})),
    stop_cluster(C1).

fencing_test_() ->
    {setup, fun() -> start_cluster("x", 3, #{}) end, fun stop_cluster/1,
     fun(C) -> {"a leader that missed an election steps down: no ok, its entry is truncated",
                {timeout, 60, fun() -> fencing(C) end}} end}.

fencing(C) ->
    N0 = node_of(C, 0), N1 = node_of(C, 1), N2 = node_of(C, 2),
    Server = testbed_store:server(?STORE),
    {ok, 0} = gen_server:call(worker_on(N1), {append_events, ?STORE, <<"x">>, [new_event(<<"x0">>, 0)]}),
    Old = erpc:call(N0, erlang, whereis, [Server]),
    #{term := OldTerm} = erpc:call(N0, testbed_store, status, [?STORE]),
    %% The leader freezes (as under SIGSTOP); the others elect a new one meanwhile.
    ok = erpc:call(N0, sys, suspend, [Old]),
    _ = erpc:call(N1, global, unregister_name, [{testbed_leader, ?STORE}]),
    gen_server:cast({Server, N1}, {not_leader, Old}),
    New = erpc:call(N1, erlang, whereis, [Server]),
    await(fun() -> #{leader := New, synced := true} = erpc:call(N2, testbed_store, status, [?STORE]), true end,
          n2_follows_n1),
    #{term := NewTerm, role := leader} = erpc:call(N1, testbed_store, status, [?STORE]),
    ?assert(NewTerm > OldTerm),
    %% The new leader counts the frozen one as a follower until it has been silent for
    %% 5 s (then it is dropped), so this first write may wait that long.
    {ok, 1} = gen_server:call(worker_on(N2), {append_events, ?STORE, <<"x">>, [new_event(<<"x1">>, 1)]}, 20000),
    %% A write reaches the old leader while it is frozen: when it resumes it learns the
    %% higher term; it must not acknowledge the write and must follow the new leader.
    Self = self(),
    spawn_link(fun() -> Self ! {stale, catch gen_server:call(Old, {append, <<"x">>, any, [new_event(<<"stale">>, 9)]}, 20000)} end),
    await(fun() -> {messages, Ms} = erpc:call(N0, erlang, process_info, [Old, messages]),
                   lists:any(fun(M) -> element(1, element(3, M)) =:= append end,
                             [M || {'$gen_call', _, Req} = M <- Ms, is_tuple(Req)])
          end, stale_write_queued),
    ok = erpc:call(N0, sys, resume, [Old]),
    Stale = receive {stale, R} -> R after 20000 -> error(no_stale_reply) end,
    ?assertMatch({error, _}, Stale),
    await(fun() -> #{role := follower, leader := New, synced := true} =
                       erpc:call(N0, testbed_store, status, [?STORE]), true end, n0_follows_n1),
    %% Its entry is gone from its log; every log is the new leader's.
    ?assertEqual(log_of(C, 1), log_of(C, 0)),
    ?assertEqual(log_of(C, 1), log_of(C, 2)),
    ?assertEqual([{<<"x">>, 0, <<"x0">>}, {<<"x">>, 1, <<"x1">>}],
                 testbed:stored_events(dir_of(C, 0), ?STORE)),
    ?assertEqual({ok, 1}, gen_server:call(worker_on(N0), {get_version, ?STORE, <<"x">>})).

cold_restart_test_() ->
    {setup, fun() -> start_cluster("r", 3, #{}) end, fun stop_cluster/1,
     fun(C) -> {"whole cluster restarted one node after another, stalest first: no acked append lost",
                {timeout, 90, fun() -> cold_restart(C) end}} end}.

cold_restart(C) ->
    N0 = node_of(C, 0),
    {ok, 0} = gen_server:call(worker_on(N0), {append_events, ?STORE, <<"r">>, [new_event(<<"r0">>, 0)]}),
    %% n1 goes down first; n0 and n2 acknowledge one more append without it.
    kill(node_of(C, 1)),
    {ok, 1} = gen_server:call(worker_on(N0), {append_events, ?STORE, <<"r">>, [new_event(<<"r1">>, 1)]}),
    kill(N0),
    kill(node_of(C, 2)),
    %% The stalest node comes back first: alone it is no majority, so it waits (its boot
    %% still returns); with the second node the most up-to-date log leads.
    C1 = restart_node(C, 1),
    ?assertMatch(#{standby := true}, erpc:call(node_of(C1, 1), testbed_store, status, [?STORE])),
    C2 = restart_node(C1, 0),
    await(fun() -> #{synced := true} = erpc:call(node_of(C2, 1), testbed_store, status, [?STORE]), true end,
          n1_synced),
    C3 = restart_node(C2, 2),
    [?assertEqual([{<<"r">>, 0, <<"r0">>}, {<<"r">>, 1, <<"r1">>}],
                  testbed:stored_events(dir_of(C3, I), ?STORE)) || I <- [0, 1, 2]],
    {ok, 2} = gen_server:call(worker_on(node_of(C3, 1)), {append_events, ?STORE, <<"r">>, [new_event(<<"r2">>, 2)]}),
    stop_cluster(C3).

stale_term_test_() ->
    {setup, fun() -> start_cluster("t", 3, #{}) end, fun stop_cluster/1,
     fun(C) -> {"a leader whose followers saw a higher term answers its write with an error and steps down",
                {timeout, 60, fun() -> stale_term(C) end}} end}.

stale_term(C) ->
    N0 = node_of(C, 0),
    {ok, 0} = gen_server:call(worker_on(N0), {append_events, ?STORE, <<"t">>, [new_event(<<"t0">>, 0)]}),
    #{term := {N, _}} = erpc:call(N0, testbed_store, status, [?STORE]),
    %% The followers hear from a leader of a higher term (this test process stands in for
    %% one elected behind the old leader's back).
    Higher = {N + 50, 'elsewhere@127.0.0.1'},
    [begin
         #{last := Last, terms := Terms} = erpc:call(Node, testbed_store, log_info, [?STORE]),
         [{_, LastTerm} | _] = Terms,
         gen_server:cast({testbed_store:server(?STORE), Node},
                         {append_entries, Higher, self(), Last, LastTerm, [], normal}),
         receive {'$gen_cast', {ack, _, Higher, Last}} -> ok after 5000 -> error(no_ack) end
     end || Node <- [node_of(C, 1), node_of(C, 2)]],
    %% The old leader writes, its followers reject its term: an error, never ok.
    ?assertEqual({error, timeout},
                 gen_server:call(worker_on(N0), {append_events, ?STORE, <<"t">>, [new_event(<<"t1">>, 1)]}, 20000)),
    %% It stepped down; a leader of a term above the stand-in's takes over and serves.
    await(fun() -> #{role := leader, term := T} = erpc:call(leader_node(N0), testbed_store, status, [?STORE]),
                   T > Higher end, new_term),
    {ok, _} = gen_server:call(worker_on(N0), {append_events, ?STORE, <<"t">>, [new_event(<<"t2">>, 2)]}, 20000),
    await(fun() -> log_of(C, 0) =:= log_of(C, 1) andalso log_of(C, 1) =:= log_of(C, 2) end, same_logs),
    ?assertEqual(ok, testbed:check_log(dir_of(C, 0), ?STORE)).
