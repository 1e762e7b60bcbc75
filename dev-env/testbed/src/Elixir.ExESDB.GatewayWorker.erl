%%% @doc The gateway worker of ExESDB v0.11, as seen on the wire (WIRE.md §3 and §4).
%%%
%%% Registered in Swarm as {gateway_worker, Store, node(), N}, N random in 1..10000; a
%%% restarted worker gets a new N. Reads and expected-version checks use this node's
%%% replica; writes go to the store's leader. Requests the real worker cannot handle
%%% crash this one with the same exit reasons (unknown store: PartitionSupervisor noproc;
%%% unknown request: function_clause in handle_call/3).
%%%
%%% The module keeps the real module's name so that a function_clause stack trace names
%%% 'Elixir.ExESDB.GatewayWorker':handle_call/3, and its state is the same keyword list.
%%% Fault hooks (testbed_fault) arrive as {testbed_fault, ...} messages and live in the
%%% process dictionary, so the state stays identical to the real one.
-module('Elixir.ExESDB.GatewayWorker').
-behaviour(gen_server).

-export([start_link/1, init/1, handle_call/3, handle_cast/2, handle_info/2]).
-export([is_worker_name/1]).

-define(FAULTS, fault()).

start_link(Store) -> gen_server:start_link(?MODULE, Store, []).

%% @doc Whether a Swarm name is a gateway worker's (both shapes of WIRE.md §2).
is_worker_name({gateway_worker, _Store, _Node, _N}) -> true;
is_worker_name({gateway_worker, _Node, _N}) -> true;
is_worker_name(_) -> false.

init(Store) ->
    Name = register_random(Store),
    {ok, [{gateway_worker_name, Name}, {otp_app, ex_esdb},
          {data_dir, unicode:characters_to_binary(testbed_app:env(data_dir))},
          {store_id, Store}, {timeout, 10000}, {db_type, cluster},
          {store_description, <<"undefined!">>}, {store_tags, []}]}.

register_random(Store) ->
    Name = {gateway_worker, Store, node(), rand:uniform(10000)},
    case 'Elixir.Swarm':register_name(Name, self()) of
        yes -> Name;
        no -> register_random(Store)
    end.

%% ---------------------------------------------------------------- calls

handle_call({append_events, Store, Stream, Events}, _From, State) ->
    ?FAULTS,
    {reply, append(Store, Stream, any, Events), State};
handle_call({append_events, Store, Stream, Expected, Events}, _From, State)
  when is_integer(Expected); Expected =:= any; Expected =:= stream_exists ->
    ?FAULTS,
    {reply, append(Store, Stream, Expected, Events), State};
handle_call({get_events, Store, Stream, Start, Count, Direction}, _From, State)
  when Direction =:= forward; Direction =:= backward ->
    ?FAULTS,
    Tab = readers(Store),
    reader_name(Store, Stream),
    V = testbed_store:local_version(Store, Stream),
    Numbers = numbers(Direction, Start, Count, V),
    {reply, {ok, [R || N <- Numbers, {_, R} <- ets:lookup(Tab, {event, Stream, N})]}, State};
handle_call({get_version, Store, Stream}, _From, State) ->
    ?FAULTS,
    {reply, {ok, testbed_store:local_version(Store, Stream)}, State};
handle_call({get_streams, Store}, _From, State) ->
    ?FAULTS,
    Tab = readers(Store),
    {reply, {ok, lists:sort([S || [S] <- ets:match(Tab, {{version, '$1'}, '_'})])}, State};
handle_call({get_subscriptions, Store}, _From, State) ->
    ?FAULTS,
    Tab = khepri(Store),
    {reply, {ok, maps:from_list([{K, M} || [K, M] <- ets:match(Tab, {{sub, '$1'}, '$2'})])}, State};
handle_call({read_snapshot, Store, Src, Stream, V}, _From, State) ->
    ?FAULTS,
    Tab = khepri(Store),
    case ets:lookup(Tab, {snapshot, Src, Stream, V}) of
        [{_, Rec}] -> {reply, {ok, Rec}, State};
        [] ->
            Path = testbed_rec:snapshot_path(Src, Stream, V),
            {reply, {error, {khepri, node_not_found,
                             #{node_name => lists:last(Path), node_path => Path,
                               node_is_target => true}}}, State}
    end;
handle_call({list_snapshots, Store, Src, Stream}, _From, State) ->
    ?FAULTS,
    Tab = khepri(Store),
    {reply, {ok, maps:from_list(
                   [{testbed_rec:snapshot_path(S, Sm, V), R}
                    || {{snapshot, S, Sm, V}, R} <- ets:tab2list(Tab),
                       Src =:= any orelse Src =:= S, Stream =:= any orelse Stream =:= Sm])},
     State};
handle_call({list_stores}, _From, State) ->
    ?FAULTS,
    Replies = erpc:multicall([node() | nodes()], testbed_store, local_configs, [], 5000),
    {reply, {ok, lists:append([L || {ok, L} <- Replies])}, State};
handle_call({Check, Store}, _From, State)
  when Check =:= quick_health_check; Check =:= verify_cluster_consistency;
       Check =:= verify_membership_consensus; Check =:= check_raft_log_consistency ->
    ?FAULTS,
    {reply, testbed_health:check(Check, Store), State};
handle_call({Dir, Store, Stream, Start, Count}, _From, State)
  when Dir =:= stream_forward; Dir =:= stream_backward ->
    ?FAULTS,
    _ = readers(Store),
    V = testbed_store:local_version(Store, Stream),
    Enum = numbers(case Dir of stream_forward -> forward; stream_backward -> backward end,
                   Start, Count, V),
    %% A lazy Elixir Stream: its funs are local to this node, useless to another peer.
    {reply, {ok, #{'__struct__' => 'Elixir.Stream', enum => Enum, done => nil, accs => [],
                   funs => [fun(X) -> X =:= nil end, fun(N) -> {Store, Stream, N} end]}},
     State}.

%% ---------------------------------------------------------------- casts

handle_cast({save_subscription, Store, Type, Selector, Name, StartFrom, Subscriber}, State) ->
    ?FAULTS,
    write(Store, {save_subscription, Type, Selector, Name, StartFrom, Subscriber}),
    {noreply, State};
handle_cast({remove_subscription, Store, Type, Selector, Name}, State) ->
    ?FAULTS,
    write(Store, {remove_subscription, Type, Selector, Name}),
    {noreply, State};
handle_cast({ack_event, Store, Name, SubscriberPid, Event}, State) ->
    ?FAULTS,
    write(Store, {ack_event, Name, SubscriberPid, Event}),
    {noreply, State};
handle_cast({record_snapshot, Store, Src, Stream, V, Rec}, State) ->
    ?FAULTS,
    write(Store, {record_snapshot, Src, Stream, V, Rec}),
    {noreply, State};
handle_cast({delete_snapshot, Store, Src, Stream, V}, State) ->
    ?FAULTS,
    write(Store, {delete_snapshot, Src, Stream, V}),
    {noreply, State}.

%% ---------------------------------------------------------------- faults

handle_info({testbed_fault, slow, Ms}, State) ->
    put(testbed_slow_ms, Ms),
    {noreply, State};
handle_info({testbed_fault, crash_next}, State) ->
    put(testbed_crash_next, true),
    {noreply, State};
handle_info({testbed_fault, clear}, State) ->
    erase(testbed_slow_ms),
    erase(testbed_crash_next),
    {noreply, State};
handle_info(_, State) -> {noreply, State}.

fault() ->
    case get(testbed_crash_next) of
        true -> exit(testbed_fault_crash);
        _ -> ok
    end,
    case get(testbed_slow_ms) of
        Ms when is_integer(Ms), Ms > 0 -> timer:sleep(Ms);
        _ -> ok
    end.

%% ---------------------------------------------------------------- helpers

%% The event numbers a read covers, given the stream's version V (empty when none).
numbers(forward, Start, Count, V) ->
    range(max(Start, 0), min(V, Start + Count - 1), 1);
numbers(backward, Start, Count, V) ->
    range(min(Start, V), max(Start - Count + 1, 0), -1).

range(From, To, 1) when From > To -> [];
range(From, To, -1) when From < To -> [];
range(From, To, Step) -> lists:seq(From, To, Step).

append(Store, Stream, Expected, Events) ->
    testbed_store:known(Store) orelse
        exit({noproc, {'Elixir.PartitionSupervisor', partitions,
                       [list_to_atom("exesdb_streamswriters_" ++ atom_to_list(Store))]}}),
    writer_name(Store, Stream),
    %% Expected versions are checked against this node's replica first, as ExESDB does:
    %% a lagging follower rejects with its own (stale) version.
    Local = testbed_store:local_version(Store, Stream),
    case Expected of
        any -> testbed_store:leader_call(Store, {append, Stream, Expected, Events});
        stream_exists when Local < 0 -> {error, {wrong_expected_version, Local}};
        E when is_integer(E), E =/= Local -> {error, {wrong_expected_version, Local}};
        _ -> testbed_store:leader_call(Store, {append, Stream, Expected, Events})
    end.

write(Store, Op) ->
    _ = khepri(Store),
    case testbed_store:leader_call(Store, {write, Op}) of
        ok -> ok;
        Error -> logger:warning("testbed: ~p failed: ~p", [element(1, Op), Error])
    end.

%% The readers' table; an unknown store exits as ExESDB's PartitionSupervisor lookup does.
readers(Store) ->
    case testbed_store:tab(Store) of
        undefined ->
            exit({noproc, {'Elixir.PartitionSupervisor', partitions,
                           [list_to_atom("exesdb_streamsreaders_" ++ atom_to_list(Store))]}});
        Tab -> Tab
    end.

%% Khepri-backed calls on an unknown store exit with a bare noproc.
khepri(Store) ->
    case testbed_store:tab(Store) of
        undefined -> exit(noproc);
        Tab -> Tab
    end.

%% ExESDB registers a Swarm name per stream reader and writer, so the registry grows
%% with use; clients that scan it must filter worker names.
reader_name(Store, Stream) ->
    once({streams_reader_worker, Store, Stream}, Store).

writer_name(Store, Stream) when is_binary(Stream) ->
    once(binary_to_atom(iolist_to_binary(["streams_writer_worker_", atom_to_binary(Store),
                                          "_", Stream])), Store);
writer_name(_, _) -> ok.

%% The names point at the node's store server (the testbed has no per-stream processes).
once(Name, Store) ->
    case get({swarm_name, Name}) of
        undefined ->
            put({swarm_name, Name}, true),
            case whereis(testbed_store:server(Store)) of
                undefined -> ok;
                Pid -> 'Elixir.Swarm':register_name(Name, Pid)
            end;
        _ -> ok
    end.
