%%% @doc One store on one node: the node's replica, the store's leader election, and the
%%% append-only log under the data directory.
%%%
%%% Consistency model (stands in for Khepri on Ra):
%%% - Every node runs a store server per store. One of them is the leader: it holds the
%%%   global name {testbed_leader, Store}. Every write (appends, snapshots, subscriptions)
%%%   is serialised by the leader, which checks expected versions against its own state.
%%% - The leader writes the entries to its log and file:sync/1s it, then sends them to
%%%   every follower that has joined it; each follower writes and syncs its own log before
%%%   it answers. Only then does the leader reply: an acknowledged write is on the disk
%%%   of every live replica, so any surviving node can take over without losing it.
%%% - Followers apply replicated entries to their readable replica (an ETS table that
%%%   workers read) after lag_ms (0: before they answer the leader).
%%% - When the leader dies, followers see its 'DOWN', race for the global name, and the
%%%   winner first fetches from the other replicas any events it lacks (a write that was
%%%   on some replicas when the leader died), then serves. Followers re-join the new
%%%   leader, sending their versions; the leader sends back what they miss.
%%% - A restarted node replays its log, then joins the leader and catches up.
%%%
%%% Log format: <data_dir>/<Store>.log, a sequence of frames
%%% <<Size:32/big, (term_to_binary(Entry)):Size/binary>>, where Entry is one of
%%%   {event, Stream, EventRecord}            (EventRecord holds event_number)
%%%   {snapshot, {Source, Stream, Version}, Record} | {snapshot_deleted, {S, St, V}}
%%%   {subscription, Key, Map} | {subscription_deleted, Key}
%%%   {snapshots_reset, [{{S, St, V}, Record}]} | {subscriptions_reset, [{Key, Map}]}
%%% A torn frame at the end (a crash while writing) is cut off at start-up.
-module(testbed_store).
-behaviour(gen_server).

-export([start_link/1, await_ready/2, server/1, tab/1, known/1, leader/1, leader_node/1, leader_call/2,
         local_version/2, local_configs/0, status/1, read_log/1, log_path/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-record(st, {store, tab, log, path, persisted = #{}, role = electing, leader,
             leader_mon, replicas = #{}, lag = 0, pending = [], created_us,
             synced = false, waiters = []}).

-define(REPLICATE_TIMEOUT, 5000).

%% ---------------------------------------------------------------- API

start_link(Store) -> gen_server:start_link({local, server(Store)}, ?MODULE, Store, []).

%% @doc Returns once this node's replica serves: it leads, or it has caught up.
await_ready(Store, Timeout) -> gen_server:call(server(Store), await_ready, Timeout).

%% @doc The locally registered name of a store's server.
server(Store) -> list_to_atom("testbed_store_" ++ atom_to_list(Store)).

%% @doc The replica table that workers read, or `undefined' for an unknown store.
tab(Store) -> persistent_term:get({?MODULE, Store}, undefined).

%% @doc Whether this node serves the store.
known(Store) -> tab(Store) =/= undefined.

%% @doc The leader's pid, or `undefined' during an election.
leader(Store) -> global:whereis_name({testbed_leader, Store}).

leader_node(Store) ->
    case leader(Store) of
        undefined -> undefined;
        Pid -> node(Pid)
    end.

%% @doc Sends a write to the leader; retries while there is none (not delivered).
leader_call(Store, Req) -> leader_call(Store, Req, 60).

leader_call(_Store, _Req, 0) -> {error, no_leader};
leader_call(Store, Req, Tries) ->
    case leader(Store) of
        undefined -> retry(Store, Req, Tries);
        Pid ->
            try gen_server:call(Pid, Req, 10000) of
                {error, not_leader} -> retry(Store, Req, Tries);
                Reply -> Reply
            catch
                exit:{noproc, _} -> retry(Store, Req, Tries);
                exit:{timeout, _} -> {error, timeout};
                exit:{Reason, _} -> {error, {leader_unavailable, Reason}}
            end
    end.

retry(Store, Req, Tries) ->
    timer:sleep(100),
    leader_call(Store, Req, Tries - 1).

%% @doc The version of a stream in this node's replica (-1 when it does not exist).
local_version(Store, Stream) ->
    case tab(Store) of
        undefined -> -1;
        Tab ->
            case ets:lookup(Tab, {version, Stream}) of
                [{_, V}] -> V;
                [] -> -1
            end
    end.

%% @doc This node's entries of list_stores.
local_configs() ->
    [#{node => node(), store => gen_server:call(server(S), config)}
     || S <- testbed_app:env(stores)].

%% @doc Role, leader and persisted versions (for health checks and tests).
status(Store) -> gen_server:call(server(Store), status).

log_path(DataDir, Store) -> filename:join(DataDir, atom_to_list(Store) ++ ".log").

%% @doc Every entry of a log file, in order (a torn last frame is ignored).
read_log(Path) ->
    case file:read_file(Path) of
        {ok, Bin} -> {Entries, _Good} = frames(Bin, [], 0), Entries;
        {error, enoent} -> []
    end.

frames(<<Size:32, Bin:Size/binary, Rest/binary>>, Acc, Good) ->
    frames(Rest, [binary_to_term(Bin) | Acc], Good + 4 + Size);
frames(_, Acc, Good) -> {lists:reverse(Acc), Good}.

%% ---------------------------------------------------------------- server

init(Store) ->
    process_flag(trap_exit, true),
    DataDir = testbed_app:env(data_dir),
    Path = log_path(DataDir, Store),
    ok = filelib:ensure_dir(Path),
    Tab = ets:new(testbed_replica, [set, public, {read_concurrency, true}]),
    St0 = #st{store = Store, tab = Tab, path = Path, lag = testbed_app:env(lag_ms, 0),
              created_us = testbed_rec:now_us()},
    St1 = recover(St0),
    {ok, Log} = file:open(Path, [append, raw, binary]),
    persistent_term:put({?MODULE, Store}, Tab),
    self() ! elect,
    {ok, St1#st{log = Log}}.

%% Replays the log into the replica; cuts off a torn tail.
recover(#st{path = Path} = St) ->
    case file:read_file(Path) of
        {ok, Bin} ->
            {Entries, Good} = frames(Bin, [], 0),
            Good < byte_size(Bin) andalso truncate(Path, Good),
            lists:foldl(fun(E, A) -> apply_entries([E], track([E], A)) end, St, Entries);
        {error, enoent} -> St
    end.

truncate(Path, Size) ->
    {ok, F} = file:open(Path, [read, write, raw, binary]),
    {ok, _} = file:position(F, Size),
    ok = file:truncate(F),
    file:close(F).

handle_call(config, _From, St) ->
    {reply, testbed_rec:store_config(St#st.store, St#st.created_us), St};
handle_call(status, _From, #st{} = St) ->
    {reply, #{role => St#st.role, synced => St#st.synced, leader => St#st.leader, persisted => St#st.persisted,
              replicas => maps:keys(St#st.replicas),
              events => lists:sum([V + 1 || V <- maps:values(St#st.persisted)])}, St};
handle_call(await_ready, From, #st{synced = false, waiters = W} = St) ->
    {noreply, St#st{waiters = [From | W]}};
handle_call(await_ready, _From, St) ->
    {reply, ok, St};
handle_call(persisted_versions, _From, St) ->
    St1 = flush_pending(St),
    {reply, St1#st.persisted, St1};
handle_call({fetch, Stream, From}, _From, St) ->
    St1 = flush_pending(St),
    Last = maps:get(Stream, St1#st.persisted, -1),
    {reply, [R || N <- lists:seq(From, Last), {_, R} <- ets:lookup(St1#st.tab, {event, Stream, N})], St1};
handle_call({replicate, Entries}, _From, St) ->
    {reply, ok, receive_entries(Entries, St)};
handle_call(_Write, _From, #st{role = Role} = St) when Role =/= leader ->
    {reply, {error, not_leader}, St};
handle_call({append, Stream, Expected, Events}, _From, St) ->
    Cur = maps:get(Stream, St#st.persisted, -1),
    case check_expected(Expected, Cur) of
        ok when Events =:= [] -> {reply, {ok, Cur}, St};
        ok ->
            Recs = records(Stream, Cur, Events),
            St1 = commit([{event, Stream, R} || R <- Recs], St),
            emit(Recs, St1),
            {reply, {ok, Cur + length(Events)}, St1};
        Error -> {reply, Error, St}
    end;
handle_call({write, Op}, _From, St) ->
    {Entries, Replay} = write_entries(Op, St),
    St1 = case Entries of [] -> St; _ -> commit(Entries, St) end,
    [replay(M, St1) || M <- Replay],
    {reply, ok, St1}.

handle_cast({join, Pid, Versions}, #st{role = leader, tab = Tab} = St) ->
    Missing = maps:fold(
                fun(Stream, V, Acc) ->
                        case maps:get(Stream, Versions, -1) of
                            Theirs when Theirs < V ->
                                Acc ++ [{event, Stream, R}
                                        || N <- lists:seq(Theirs + 1, V),
                                           {_, R} <- ets:lookup(Tab, {event, Stream, N})];
                            _ -> Acc
                        end
                end, [], St#st.persisted),
    Snaps = [{{S, Sm, V}, R} || {{snapshot, S, Sm, V}, R} <- ets:tab2list(Tab)],
    Subs = [{K, M} || {{sub, K}, M} <- ets:tab2list(Tab)],
    gen_server:cast(Pid, {catch_up, self(),
                          Missing ++ [{snapshots_reset, Snaps}, {subscriptions_reset, Subs}]}),
    Replicas = case maps:is_key(Pid, St#st.replicas) of
                   true -> St#st.replicas;
                   false -> (St#st.replicas)#{Pid => erlang:monitor(process, Pid)}
               end,
    {noreply, St#st{replicas = Replicas}};
handle_cast({join, _Pid, _}, St) ->
    {noreply, St};
handle_cast({catch_up, Leader, Entries}, #st{leader = Leader} = St) ->
    St1 = flush_pending(St),
    {noreply, ready(flush_pending(receive_entries(Entries, St1)))};
handle_cast({catch_up, _, _}, St) ->
    {noreply, St}.

handle_info(elect, St) -> {noreply, elect(St)};
handle_info(apply_due, St) -> {noreply, apply_due(St)};
handle_info({'DOWN', Ref, process, _, _}, #st{leader_mon = Ref} = St) ->
    erlang:send_after(rand:uniform(30), self(), elect),
    {noreply, St#st{role = electing, leader = undefined, leader_mon = undefined,
                    synced = false}};
handle_info({'DOWN', Ref, process, Pid, _}, #st{replicas = R} = St) ->
    case maps:find(Pid, R) of
        {ok, Ref} -> {noreply, St#st{replicas = maps:remove(Pid, R)}};
        _ -> {noreply, St}
    end;
handle_info({global_name_conflict, _Name, _Other}, St) ->
    %% global unregistered us: elect again.
    erlang:send_after(rand:uniform(100), self(), elect),
    {noreply, St#st{role = electing, leader = undefined, synced = false}};
handle_info(_, St) -> {noreply, St}.

terminate(_, #st{log = Log}) when Log =/= undefined -> file:close(Log);
terminate(_, _) -> ok.

%% ---------------------------------------------------------------- election

elect(#st{store = Store} = St) ->
    Name = {testbed_leader, Store},
    case global:whereis_name(Name) of
        undefined ->
            case global:register_name(Name, self(), fun global:notify_all_name/3) of
                yes -> become_leader(St);
                no -> erlang:send_after(rand:uniform(30), self(), elect), St
            end;
        Me when Me =:= self() -> ready(St#st{role = leader, leader = self()});
        Pid ->
            Mon = erlang:monitor(process, Pid),
            St1 = flush_pending(St),
            gen_server:cast(Pid, {join, self(), St1#st.persisted}),
            St1#st{role = follower, leader = Pid, leader_mon = Mon}
    end.

%% Takes over: first collect events that other replicas have and we lack.
become_leader(#st{store = Store} = St0) ->
    St = flush_pending(St0),
    Peers = [{server(Store), N} || N <- nodes()],
    St1 = lists:foldl(fun(Peer, Acc) -> merge_from(Peer, Acc) end, St, Peers),
    logger:notice("testbed: ~p is now the leader of ~p", [node(), Store]),
    %% Every live replica is a follower from the first write on: its own join may come
    %% later, and a write acknowledged before it must still be on its disk.
    St2 = lists:foldl(fun adopt/2, St1, Peers),
    ready(St2#st{role = leader, leader = self(), leader_mon = undefined}).

adopt({Name, Node}, #st{replicas = R} = St) ->
    case rpc:call(Node, erlang, whereis, [Name], 2000) of
        Pid when is_pid(Pid) ->
            case maps:is_key(Pid, R) of
                true -> St;
                false -> St#st{replicas = R#{Pid => erlang:monitor(process, Pid)}}
            end;
        _ -> St
    end.

%% Serving: a leader, or a follower that has caught up with its leader.
ready(#st{waiters = W} = St) ->
    [gen_server:reply(From, ok) || From <- W],
    St#st{synced = true, waiters = []}.

merge_from(Peer, St) ->
    case catch gen_server:call(Peer, persisted_versions, 2000) of
        Versions when is_map(Versions) ->
            maps:fold(
              fun(Stream, V, Acc) ->
                      Mine = maps:get(Stream, Acc#st.persisted, -1),
                      Fetched = case V > Mine of
                                    true -> catch gen_server:call(Peer, {fetch, Stream, Mine + 1}, 5000);
                                    false -> []
                                end,
                      case Fetched of
                          Recs when is_list(Recs), Recs =/= [] ->
                              Entries = [{event, Stream, R} || R <- Recs],
                              apply_entries(Entries, persist(Entries, Acc));
                          _ -> Acc
                      end
              end, St, Versions);
        _ -> St
    end.

%% ---------------------------------------------------------------- writes

check_expected(any, _) -> ok;
check_expected(stream_exists, Cur) when Cur >= 0 -> ok;
check_expected(Cur, Cur) when is_integer(Cur) -> ok;
check_expected(_, Cur) -> {error, {wrong_expected_version, Cur}}.

records(Stream, Cur, Events) ->
    {Recs, _} = lists:mapfoldl(
                  fun(E, {N, Last}) ->
                          Us = max(testbed_rec:now_us(), Last + 1),
                          {testbed_rec:event_record(Stream, N, E, Us), {N + 1, Us}}
                  end, {Cur + 1, 0}, Events),
    Recs.

%% The entries a write produces, and the subscriptions to replay afterwards.
write_entries({save_subscription, Type, Selector, Name, StartFrom, Subscriber},
              #st{store = Store, tab = Tab}) ->
    Key = testbed_rec:subscription_key(Type, Selector, Name, Store),
    Persistent = Name =/= <<"transient">>,
    From = case ets:lookup(Tab, {sub, Key}) of
               [{_, #{start_from := Acked}}] when Persistent -> Acked;
               _ -> StartFrom
           end,
    M = #{type => Type, selector => Selector, subscription_name => Name,
          start_from => From, subscriber => Subscriber},
    {[{subscription, Key, M}], [M || Persistent]};
write_entries({remove_subscription, Type, Selector, Name}, #st{store = Store}) ->
    {[{subscription_deleted, testbed_rec:subscription_key(Type, Selector, Name, Store)}], []};
write_entries({ack_event, Name, _Pid, Event}, #st{tab = Tab}) ->
    N = case Event of
            #{event_number := EN} when is_integer(EN) -> EN;
            _ -> -1
        end,
    {[{subscription, K, M#{start_from => N + 1}}
      || {{sub, K}, #{subscription_name := SN, start_from := F} = M} <- ets:tab2list(Tab),
         SN =:= Name, N + 1 > F], []};
write_entries({record_snapshot, Src, Stream, V, Rec}, _) ->
    {[{snapshot, {Src, Stream, V}, Rec}], []};
write_entries({delete_snapshot, Src, Stream, V}, _) ->
    {[{snapshot_deleted, {Src, Stream, V}}], []}.

%% Leader: persist, apply, replicate to every joined follower; returns once all answered.
commit(Entries, St) ->
    St1 = apply_entries(Entries, persist(Entries, St)),
    Reqs = [{P, gen_server:send_request(P, {replicate, Entries})} || P <- maps:keys(St1#st.replicas)],
    lists:foldl(
      fun({P, Req}, Acc) ->
              case gen_server:wait_response(Req, ?REPLICATE_TIMEOUT) of
                  {reply, ok} -> Acc;
                  Other ->
                      logger:warning("testbed: replica ~p dropped (~p)", [P, Other]),
                      {Mon, Rs} = maps:take(P, Acc#st.replicas),
                      erlang:demonitor(Mon, [flush]),
                      Acc#st{replicas = Rs}
              end
      end, St1, Reqs).

%% Follower: persist now, make readable now or after the lag.
receive_entries(Entries0, St) ->
    Entries = [E || E <- Entries0, is_new(E, St)],
    St1 = persist(Entries, St),
    case St1#st.lag of
        0 -> apply_entries(Entries, St1);
        Lag ->
            Due = erlang:monotonic_time(millisecond) + Lag,
            St1#st.pending =:= [] andalso erlang:send_after(Lag, self(), apply_due),
            St1#st{pending = St1#st.pending ++ [{Due, Entries}]}
    end.

is_new({event, Stream, #{event_number := N}}, #st{persisted = P}) ->
    N > maps:get(Stream, P, -1);
is_new(_, _) -> true.

%% Writes entries to the log and syncs; tracks persisted versions.
persist([], St) -> St;
persist(Entries, #st{log = Log} = St) ->
    Frames = [begin B = term_to_binary(E), [<<(byte_size(B)):32>>, B] end || E <- Entries],
    ok = file:write(Log, Frames),
    ok = file:sync(Log),
    track(Entries, St).

track(Entries, St) ->
    P = lists:foldl(fun({event, Stream, #{event_number := N}}, Acc) ->
                            maps:put(Stream, max(N, maps:get(Stream, Acc, -1)), Acc);
                       (_, Acc) -> Acc
                    end, St#st.persisted, Entries),
    St#st{persisted = P}.

apply_due(#st{pending = Pending} = St) ->
    Now = erlang:monotonic_time(millisecond),
    {Due, Later} = lists:splitwith(fun({D, _}) -> D =< Now end, Pending),
    St1 = lists:foldl(fun({_, Es}, A) -> apply_entries(Es, A) end, St, Due),
    case Later of
        [{Next, _} | _] -> erlang:send_after(max(0, Next - Now), self(), apply_due);
        [] -> ok
    end,
    St1#st{pending = Later}.

flush_pending(#st{pending = []} = St) -> St;
flush_pending(#st{pending = P} = St) ->
    St1 = lists:foldl(fun({_, Es}, A) -> apply_entries(Es, A) end, St, P),
    St1#st{pending = []}.

apply_entries(Entries, #st{tab = Tab} = St) ->
    lists:foreach(fun(E) -> apply_entry(Tab, E) end, Entries),
    St.

apply_entry(Tab, {event, Stream, #{event_number := N} = R}) ->
    Cur = case ets:lookup(Tab, {version, Stream}) of [{_, V}] -> V; [] -> -1 end,
    ets:insert(Tab, [{{event, Stream, N}, R}, {{version, Stream}, max(N, Cur)}]);
apply_entry(Tab, {snapshot, {S, Sm, V}, R}) -> ets:insert(Tab, {{snapshot, S, Sm, V}, R});
apply_entry(Tab, {snapshot_deleted, {S, Sm, V}}) -> ets:delete(Tab, {snapshot, S, Sm, V});
apply_entry(Tab, {subscription, K, M}) -> ets:insert(Tab, {{sub, K}, M});
apply_entry(Tab, {subscription_deleted, K}) -> ets:delete(Tab, {sub, K});
apply_entry(Tab, {snapshots_reset, L}) ->
    ets:match_delete(Tab, {{snapshot, '_', '_', '_'}, '_'}),
    ets:insert(Tab, [{{snapshot, S, Sm, V}, R} || {{S, Sm, V}, R} <- L]);
apply_entry(Tab, {subscriptions_reset, L}) ->
    ets:match_delete(Tab, {{sub, '_'}, '_'}),
    ets:insert(Tab, [{{sub, K}, M} || {K, M} <- L]).

%% ---------------------------------------------------------------- emitter (leader only)

%% New events go to every matching subscription: a nil subscriber means a Phoenix.PubSub
%% broadcast on <<"Store:Selector">>, one event per message (each topic once per event);
%% a pid on this node gets {events, [Record]}; a pid elsewhere gets nothing, as in
%% ExESDB v0.11 whose emitter crashes on Process.alive?/1 of a remote pid.
emit(Recs, #st{tab = Tab, store = Store}) ->
    Subs = [M || {{sub, _}, M} <- ets:tab2list(Tab)],
    [deliver(R, [S || S <- Subs, matches(S, R)], Store) || R <- Recs],
    ok.

deliver(_R, [], _Store) -> ok;
deliver(R, Subs, Store) ->
    Msg = {events, [R]},
    Topics = lists:usort([topic(Store, S) || #{subscriber := nil} = S <- Subs]),
    [testbed_pubsub:broadcast(T, Msg) || T <- Topics],
    [send_direct(P, Msg, S) || #{subscriber := P} = S <- Subs, is_pid(P)],
    ok.

send_direct(Pid, Msg, _S) when node(Pid) =:= node() -> Pid ! Msg;
send_direct(Pid, _Msg, #{subscription_name := Name}) ->
    logger:warning("testbed: subscription ~p has a subscriber on another node (~p): "
                   "nothing delivered (ExESDB v0.11's emitter crashes here)", [Name, Pid]).

topic(Store, #{selector := Sel}) when is_binary(Sel) ->
    <<(atom_to_binary(Store))/binary, ":", Sel/binary>>;
topic(Store, #{subscription_name := Name}) ->
    <<(atom_to_binary(Store))/binary, ":", Name/binary>>.

matches(#{type := by_stream, selector := <<"$all">>}, _) -> true;
matches(#{type := by_stream, selector := <<"$", Stream/binary>>}, #{event_stream_id := Stream}) -> true;
matches(#{type := by_event_type, selector := T}, #{event_type := T}) -> true;
matches(#{type := by_event_pattern, selector := P}, R) when is_map(P) ->
    lists:all(fun({K, V}) -> maps:get(K, R, undefined) =:= V end, maps:to_list(P));
matches(#{type := by_event_payload, selector := P}, #{data := D}) when is_map(P), is_map(D) ->
    lists:all(fun({K, V}) -> maps:get(K, D, undefined) =:= V end, maps:to_list(P));
matches(_, _) -> false.

%% A persistent subscription catches up from its start_from when it is saved.
replay(#{start_from := From} = Sub, #st{tab = Tab, store = Store}) when is_integer(From) ->
    Recs = lists:sort(fun(#{created_epoch := A}, #{created_epoch := B}) -> A =< B end,
                      [R || {{event, _, N}, R} <- ets:tab2list(Tab), N >= From, matches(Sub, R)]),
    [deliver(R, [Sub], Store) || R <- Recs],
    ok;
replay(_, _) -> ok.
