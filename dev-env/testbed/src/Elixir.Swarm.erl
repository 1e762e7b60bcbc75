%%% @doc The testbed's stand-in for Swarm 3.4: a cluster-wide name registry.
%%%
%%% Each node keeps its own names in an ETS table owned by the tracker process
%%% ('Elixir.Swarm.Tracker'); registered/0 merges the local table with those of every
%%% connected visible node (erpc), so the answer is the cluster-wide [{Name, Pid}] list
%%% that the real Swarm.registered() gives. A name disappears when its process dies.
-module('Elixir.Swarm').
-behaviour(gen_server).
-compile({no_auto_import, [registered/0]}).

-export([registered/0, local_registered/0, register_name/2, unregister_name/1,
         whereis_name/1, members/0]).
-export([start_link/0, init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(TRACKER, 'Elixir.Swarm.Tracker').
-define(TAB, 'Elixir.Swarm.Registry').
-define(RPC_TIMEOUT, 2000).

%% @doc Every name in the cluster, as Swarm.registered() returns them.
-spec registered() -> [{term(), pid()}].
registered() ->
    Remote = erpc:multicall(nodes(), ?MODULE, local_registered, [], ?RPC_TIMEOUT),
    local_registered() ++ lists:append([L || {ok, L} <- Remote, is_list(L)]).

%% @doc The names registered on this node.
-spec local_registered() -> [{term(), pid()}].
local_registered() ->
    try ets:tab2list(?TAB) of
        Rows -> [{Name, Pid} || {Name, Pid, _Ref} <- Rows]
    catch error:badarg -> []
    end.

%% @doc Registers Pid (a local pid) under Name; `yes' or `no' as Swarm does.
-spec register_name(term(), pid()) -> yes | no.
register_name(Name, Pid) -> gen_server:call(?TRACKER, {register, Name, Pid}).

%% @doc Removes a local name.
-spec unregister_name(term()) -> ok.
unregister_name(Name) -> gen_server:call(?TRACKER, {unregister, Name}).

%% @doc The pid of a name anywhere in the cluster, or `undefined'.
-spec whereis_name(term()) -> pid() | undefined.
whereis_name(Name) ->
    case lists:keyfind(Name, 1, registered()) of
        {_, Pid} -> Pid;
        false -> undefined
    end.

%% @doc Not part of Swarm: the names on this node whose process is alive.
members() -> local_registered().

start_link() -> gen_server:start_link({local, ?TRACKER}, ?MODULE, [], []).

init([]) ->
    ?TAB = ets:new(?TAB, [named_table, protected, set, {read_concurrency, true}]),
    {ok, #{}}.

handle_call({register, Name, Pid}, _From, St) ->
    case ets:lookup(?TAB, Name) of
        [_] -> {reply, no, St};
        [] ->
            Ref = erlang:monitor(process, Pid),
            true = ets:insert(?TAB, {Name, Pid, Ref}),
            {reply, yes, St}
    end;
handle_call({unregister, Name}, _From, St) ->
    case ets:lookup(?TAB, Name) of
        [{_, _, Ref}] ->
            erlang:demonitor(Ref, [flush]),
            ets:delete(?TAB, Name);
        [] -> ok
    end,
    {reply, ok, St}.

handle_cast(_, St) -> {noreply, St}.

handle_info({'DOWN', Ref, process, Pid, _}, St) ->
    ets:match_delete(?TAB, {'_', Pid, Ref}),
    {noreply, St};
handle_info(_, St) -> {noreply, St}.
