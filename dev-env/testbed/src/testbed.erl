%%% @doc Entry points of a testbed node and helpers for tests and tools.
%%%
%%%   boot(Config)           configure and start ex_esdb on this node; returns once every
%%%                          store serves here. Config = #{stores => [reg_gh],
%%%                          workers_per_store => 2, data_dir => Dir, lag_ms => 0,
%%%                          seeds => [Node], gossip => undefined | testbed_gossip opts,
%%%                          owner => undefined | Node (halt when that node goes down)}
%%%   stored_events(DataDir, Store) -> [{Stream, Number, EventId}]   from a node's log
%%%   check_log(DataDir, Store) -> ok | {duplicates, [..]} | {gaps, [..]}
%%%   smoke(Node, Store) -> ok   append + read round trip through a random worker
%%%   append(Store, Stream, [EventId]) -> {ok, Version} | {error, _}
%%%                          one append of those events through a random worker of this node
%%%   await_new_leader(Store, OldLeaderNode, TimeoutMs) -> NewLeaderNode
%%%                          on a surviving node: returns once it follows a new leader
-module(testbed).
-export([boot/1, stored_events/2, check_log/2, smoke/2, worker_pids/2, append/3,
         await_new_leader/3]).

-define(READY_TIMEOUT, 30000).

boot(Config) ->
    Defaults = #{stores => [reg_gh], workers_per_store => 2, lag_ms => 0,
                 gossip => undefined, seeds => [],
                 data_dir => filename:join("/tmp", "exesdb-testbed-" ++ atom_to_list(node()))},
    C = maps:merge(Defaults, Config),
    %% Load first: loading would reset the variables to the .app file's defaults.
    case application:load(ex_esdb) of
        ok -> ok;
        {error, {already_loaded, ex_esdb}} -> ok
    end,
    [application:set_env(ex_esdb, K, V) || {K, V} <- maps:to_list(C), K =/= seeds, K =/= owner],
    ok = filelib:ensure_dir(filename:join(maps:get(data_dir, C), "x")),
    %% Join the cluster before starting: stores then find their leader at once.
    [net_kernel:connect_node(S) || S <- maps:get(seeds, C), S =/= node()],
    global:sync(),
    {ok, _} = application:ensure_all_started(ex_esdb),
    [ok = testbed_store:await_ready(S, ?READY_TIMEOUT) || S <- maps:get(stores, C)],
    watch_owner(maps:get(owner, C, undefined)),
    ok.

%% A node started for a test halts when the test's control node goes away, so that a
%% test process killed without clean-up leaves no node behind.
watch_owner(undefined) -> ok;
watch_owner(Owner) ->
    {ok, _} = proc_lib:start(erlang, apply, [fun() ->
        %% monitor_node/2 does not connect by itself.
        net_kernel:connect_node(Owner) orelse
            logger:warning("testbed: cannot reach owner ~p", [Owner]),
        erlang:monitor_node(Owner, true),
        proc_lib:init_ack({ok, self()}),
        receive {nodedown, Owner} -> erlang:halt(0) end
    end, []]),
    ok.

stored_events(DataDir, Store) ->
    [{Stream, N, Id} || {event, Stream, #{event_number := N, event_id := Id}}
                            <- testbed_store:read_log(testbed_store:log_path(DataDir, Store))].

check_log(DataDir, Store) ->
    Events = stored_events(DataDir, Store),
    Keys = [{S, N} || {S, N, _} <- Events],
    case Keys -- lists:usort(Keys) of
        [] ->
            ByStream = lists:foldl(fun({S, N}, M) -> maps:update_with(S, fun(L) -> [N | L] end, [N], M) end,
                                   #{}, Keys),
            Gaps = [S || {S, Ns} <- maps:to_list(ByStream),
                         lists:sort(Ns) =/= lists:seq(0, length(Ns) - 1)],
            case Gaps of [] -> ok; _ -> {gaps, Gaps} end;
        Dups -> {duplicates, Dups}
    end.

%% @doc Pids of the gateway workers of Store in the cluster seen from Node.
worker_pids(Node, Store) ->
    [Pid || {{gateway_worker, S, _, _}, Pid} <- erpc:call(Node, 'Elixir.Swarm', registered, []),
            S =:= Store].

smoke(Node, Store) ->
    Pids = worker_pids(Node, Store),
    Pid = lists:nth(rand:uniform(length(Pids)), Pids),
    Stream = iolist_to_binary(["smoke-", integer_to_list(erlang:system_time(microsecond))]),
    Ev = #{'__struct__' => 'Elixir.ExESDB.Schema.NewEvent', '__unknown_fields__' => [],
           event_id => <<"00000000-0000-7000-8000-000000000001">>, event_type => <<"Smoke:v1">>,
           data_content_type => 1, metadata_content_type => 1,
           data => #{<<"hello">> => <<"testbed">>}, metadata => nil},
    {ok, 0} = gen_server:call(Pid, {append_events, Store, Stream, [Ev]}),
    {ok, [#{event_number := 0, data := #{<<"hello">> := <<"testbed">>}}]} =
        gen_server:call(Pid, {get_events, Store, Stream, 0, 10, forward}),
    ok.

append(Store, Stream, Ids) ->
    Pids = [P || {{gateway_worker, S, N, _}, P} <- 'Elixir.Swarm':local_registered(),
                 S =:= Store, N =:= node()],
    Pid = lists:nth(rand:uniform(length(Pids)), Pids),
    Events = [#{'__struct__' => 'Elixir.ExESDB.Schema.NewEvent', '__unknown_fields__' => [],
                event_id => Id, event_type => <<"Tested:v1">>, data_content_type => 1,
                metadata_content_type => 1, data => #{<<"id">> => Id}, metadata => nil}
              || Id <- Ids],
    gen_server:call(Pid, {append_events, Store, Stream, Events}).

%% The store server sees the old leader's 'DOWN' when we see nodedown (the same
%% connection loss), so await_ready then waits for the election and the catch-up.
await_new_leader(Store, Old, Timeout) ->
    erlang:monitor_node(Old, true),
    receive {nodedown, Old} -> ok after Timeout -> error({still_up, Old}) end,
    ok = testbed_store:await_ready(Store, Timeout),
    testbed_store:leader_node(Store).
